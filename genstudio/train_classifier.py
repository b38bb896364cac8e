"""Moved to genstudio.evaluation.train_classifier; `python -m genstudio.train_classifier` still runs it."""
from genstudio.evaluation.train_classifier import main

if __name__ == "__main__":
    raise SystemExit(main())
