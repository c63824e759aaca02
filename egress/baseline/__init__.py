"""The learned baseline (SPEC: Learned baseline): what each group (or device) normally
talks to, learned in flow time; `new-destination` and `volume` alerts after learning.

settings.py  the policy's `baseline:` keys, resolved per group
keys.py      a flow's destination key: registered domain, else as<N>/<CC>, else the IP; port
state.py     what was learned, and its JSON form (the file of `run`/`analyze`, the topic's values)
learner.py   the judgement the policy makes after deny and allow: learn, stay silent, or alert
store.py     where the state lives between runs: a file replaced atomically
commands.py  `egress baseline learn|show|approve|forget|export`
"""
