"""Can this model be trusted? A backdoor scan (`backdoor`), memorization (`memorization`) and a real-vs-generated
two-sample test (`twosample`), put together by `audit` (`report`): `genstudio audit CHECKPOINT`, docs/audit.md."""
from .report import audit

__all__ = ["audit"]
