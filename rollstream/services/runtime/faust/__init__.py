"""faust integration of the two stream processors: the app factory (app.py), its patches of
faust and aiokafka behind one version guard (patches.py), outputs through librdkafka
(sender.py) and a quiet Monitor (monitor.py)."""
