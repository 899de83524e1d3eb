"""Optional experiment loggers (`logger=` config group); records and the leaderboard never need one."""
