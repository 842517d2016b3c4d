"""Ringmon alerting: rule files, evaluator, alert state, notifier pipeline and channels.

Map:
- ``rulefile`` / ``rulestore``: load and validate Prometheus rule files; keep the last good file.
- ``template/``: safe Go-template interpreter for labels, annotations and channel bodies
  (``lex`` -> ``parse`` -> ``exec``; ``functions``, ``format``, ``alert``).
- ``evaluator``: ``RuleManager`` runs each group at its interval through the query engine.
- ``state`` / ``cassandra_stores``: alert state (and notification log, silences) persistence.
- ``ownership``: which alerter evaluates which group (local, ZooKeeper ring).
- ``notifier/``: routing, grouping, inhibition, silences, dedup log, delivery with backoff.
- ``channels/``: webhook, PagerDuty, phone (Twilio-style), email (SMTP), Alertmanager.
- ``unittest_runner``: promtool-format rule unit tests.
- ``service``: the ``ringmon alerter`` process and its HTTP API.
"""
