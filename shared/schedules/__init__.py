"""Policy schedules: cron in a time zone, and runs at most once per slot.

- `cron`: parsing an expression and finding its slots in the policy's IANA zone (DST rules), the
  catch-up rule (`due`), the next run as `drover policy list` shows it.
- `runs`: claiming a (policy, slot) in Redis before running it, and the record of each run.

The scheduler process itself (RedBeat, its entries, the leader lock, why an entry stores the
policy's own zone instead of RedBeat's crontab) is `workers.beat`; the task a slot runs is
`workers.tasks.schedules`.
"""
