"""Each built-in reward against hand-computed values, and loading rewards by name or path."""

from __future__ import annotations

import pytest
from scorer_builders import rollout

from rollstream.services.scorer.reward import RewardConfigError, load_reward
from rollstream.services.scorer.rewards.format import FormatMatch
from rollstream.services.scorer.rewards.length import LengthPenalty
from rollstream.services.scorer.rewards.match import ExactMatch, NumericMatch
from rollstream.services.scorer.rewards.overlong import SoftOverlong, overlong_penalty
from rollstream.services.scorer.rewards.repetition import RepetitionPenalty, repetition_penalty
from rollstream.services.scorer.rewards.task import TaskCheck


def test_exact_match_extracts_and_case_folds() -> None:
    reward = ExactMatch()
    assert reward.score(rollout(r"so it is \boxed{ Paris }", answer="paris")) == 1.0
    assert reward.score(rollout(r"so it is \boxed{Lyon}", answer="paris")) == 0.0
    assert ExactMatch(case_sensitive=True).score(rollout(r"\boxed{Paris}", answer="paris")) == 0.0
    first_line = ExactMatch(extract="first_line")
    assert first_line.score(rollout("new  york\nbecause", answer="New York")) == 1.0


def test_exact_match_without_the_pattern_scores_zero_and_without_answer_raises() -> None:
    assert ExactMatch(extract="boxed").score(rollout("Paris", answer="Paris")) == 0.0
    with pytest.raises(ValueError, match="no reference answer"):
        ExactMatch().score(rollout("Paris"))


def test_numeric_match_reads_the_last_number_and_applies_tolerance() -> None:
    reward = NumericMatch()
    assert reward.score(rollout("The total is 1,234.0 dollars", answer="1234")) == 1.0
    assert reward.score(rollout(r"\boxed{\frac{3}{4}}", answer="0.75")) == 1.0
    assert reward.score(rollout("#### 12", answer="13")) == 0.0
    assert reward.score(rollout("no digits at all", answer="13")) == 0.0
    assert reward.score(rollout("pi is 3.1416", answer="3.14159")) == 0.0
    assert NumericMatch(abs_tol=1e-3).score(rollout("pi is 3.1416", answer="3.14159")) == 1.0
    assert NumericMatch(rel_tol=0.01).score(rollout("about 101", answer="100")) == 1.0
    with pytest.raises(ValueError, match="not a number"):
        reward.score(rollout("5", answer="five"))


def test_math_verify_compares_mathematically() -> None:
    reward = load_reward("math_verify")
    assert reward.score(rollout(r"The answer is $\boxed{0.5}$", answer=r"\frac{1}{2}")) == 1.0
    assert reward.score(rollout(r"hence \boxed{1+x^2}", answer="x^2+1")) == 1.0
    assert reward.score(rollout(r"hence \boxed{(1,2]}", answer="(1,2]")) == 1.0
    assert reward.score(rollout(r"hence \boxed{[1,2]}", answer="(1,2]")) == 0.0
    assert reward.score(rollout(r"I think \boxed{3}", answer="2")) == 0.0
    assert reward.score(rollout("", answer="12")) == 0.0


def test_math_verify_takes_a_gsm8k_reference_by_its_hash_line() -> None:
    reward = load_reward("math_verify")
    gold = (
        "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 1,018"
    )
    assert reward.score(rollout("9 * 2 = 18, plus 1000\n#### 1018", answer=gold)) == 1.0
    assert reward.score(rollout("so 18 dollars: \\boxed{1018}", answer=gold)) == 1.0
    assert reward.score(rollout("#### 18", answer=gold)) == 0.0, "an intermediate number is not it"


def test_task_reward_calls_the_task_checker() -> None:
    from rollstream.services.tasks import get_task

    item = get_task("add").sample(0, 1)[0]
    reward = TaskCheck()
    assert reward.score(rollout(item.answer, task="add", answer=item.answer)) == 1.0
    assert reward.score(rollout(item.answer + "1", task="add", answer=item.answer)) == 0.0


def test_task_reward_uses_the_named_task_and_rejects_unknown_tasks() -> None:
    class Parity:
        def check(self, completion: str, answer: str) -> bool:
            return completion.strip() in ("even", "odd") and completion.strip() == answer

    seen: list[str] = []

    def lookup(name: str) -> Parity:
        seen.append(name)
        if name != "parity":
            raise ValueError(f"unknown task {name!r}")
        return Parity()

    reward = TaskCheck(lookup=lookup)
    assert reward.score(rollout(" even ", task="parity", answer="even")) == 1.0
    assert reward.score(rollout("odd", task="parity", answer="even")) == 0.0
    assert seen == ["parity", "parity"]
    with pytest.raises(ValueError, match="unknown task"):
        reward.score(rollout("odd", task="nope", answer="odd"))


def test_format_reward_r1_pattern_and_custom_regex() -> None:
    reward = FormatMatch()
    good = "<think>\nlet me see\n</think>\n<answer>\n4\n</answer>"
    assert reward.score(rollout(good)) == 1.0
    assert reward.score(rollout("<answer>\n4\n</answer>")) == 0.0
    custom = FormatMatch(pattern=r"\d+$", mode="search", match_value=0.5, miss_value=-1.0)
    assert custom.score(rollout("the answer is 42")) == 0.5
    assert custom.score(rollout("the answer is x")) == -1.0
    with pytest.raises(RewardConfigError, match="params.pattern"):
        FormatMatch(pattern="(unclosed")


def test_length_penalty_is_linear_between_free_and_max_len() -> None:
    reward = LengthPenalty(free=10, max_len=20, penalty=2.0)
    assert reward.score(rollout(tokens=5)) == 0.0
    assert reward.score(rollout(tokens=10)) == 0.0
    assert reward.score(rollout(tokens=15)) == -1.0
    assert reward.score(rollout(tokens=30)) == -2.0
    chars = LengthPenalty(free=0, max_len=8, unit="chars")
    assert chars.score(rollout("abcd", tokens=100)) == -0.5
    with pytest.raises(RewardConfigError, match="max_len must be greater than free"):
        LengthPenalty(free=20, max_len=20)


def test_soft_overlong_follows_dapo_eq_13() -> None:
    # L_max = 100, L_cache = 20: free up to 80, linear to -1 at 100, -1 beyond.
    assert overlong_penalty(80, 100, 20) == 0.0
    assert overlong_penalty(90, 100, 20) == -0.5
    assert overlong_penalty(100, 100, 20) == -1.0
    assert overlong_penalty(101, 100, 20) == -1.0
    reward = SoftOverlong(max_len=100, cache=20, penalty_factor=0.5)
    assert reward.score(rollout(tokens=90)) == -0.25
    assert reward.score(rollout(tokens=50)) == 0.0
    assert SoftOverlong().score(rollout(tokens=16384 + 2048)) == -0.5  # DAPO defaults


def test_repetition_penalty_counts_repeated_word_ngrams() -> None:
    # "a b a b a b", bigrams: ab ba ab ba ab -> 2 unique of 5 -> scaling 0.6
    assert repetition_penalty("a b a b a b", 2, -1.0) == pytest.approx(-0.6)
    assert repetition_penalty("A a a a", 1, -0.5) == pytest.approx(-0.375)  # 1 unique of 4
    assert repetition_penalty("the cat sat", 3, -1.0) == 0.0
    assert repetition_penalty("too short", 3, -1.0) == 0.0
    assert RepetitionPenalty(ngram=2).score(rollout("a b a b a b")) == pytest.approx(-0.6)


MY_REWARDS = (  # a user's module of rewards: a function, a class, an instance, a non-reward
    "def shout(rollout, bonus=0.0):\n"
    "    return float(rollout.completion.isupper()) + bonus\n"
    "class Brevity:\n"
    "    name = 'brevity'\n"
    "    def __init__(self, per_char=0.1):\n"
    "        self.per_char = per_char\n"
    "    async def score(self, rollout):\n"
    "        return -self.per_char * len(rollout.completion)\n"
    "INSTANCE = Brevity(1.0)\n"
    "NOT_A_REWARD = 3\n"
)


def test_load_reward_by_name() -> None:
    assert isinstance(load_reward("exact_match", {"case_sensitive": True}), ExactMatch)


def test_load_reward_from_user_code_by_dotted_path(user_code) -> None:
    user_code("my_rewards", MY_REWARDS)
    shout = load_reward("my_rewards:shout", {"bonus": 0.5})
    assert shout.name == "shout"
    assert shout.score(rollout("HEY")) == 1.5
    brevity = load_reward("my_rewards:Brevity", {"per_char": 0.5})
    assert brevity.name == "brevity"
    assert load_reward("my_rewards:INSTANCE").per_char == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "params", "error"),
    [
        ("nope", None, "unknown reward 'nope'"),
        ("numeric_match", {"rel_tol": -1}, "params.rel_tol"),
        ("numeric_match", {"tolerance": 1}, "params.tolerance"),
        ("my_rewards:INSTANCE", {"per_char": 2}, "takes no params"),
        ("my_rewards:NOT_A_REWARD", None, "not a reward"),
        ("my_rewards:missing", None, "has no 'missing'"),
        ("no_such_module_xyz:f", None, "cannot import"),
    ],
)
def test_a_reward_that_cannot_be_loaded_says_why(user_code, spec, params, error) -> None:
    user_code("my_rewards", MY_REWARDS)
    with pytest.raises(RewardConfigError, match=error):
        load_reward(spec, params)
