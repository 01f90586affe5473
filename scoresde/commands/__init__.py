"""The command line and its reports: ``scoresde compare / generate / likelihood /
schedules``. Commands compose the public API and know no model by name."""
