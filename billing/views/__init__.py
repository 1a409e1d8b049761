"""billing's pages: the administrators' overview (overview.py) and the dashboards, one
module each (savings, turnaround, volume, and exams: the exams behind any number; reports:
the administrators' growth, workload and time-limit pages), with what they share in
common.py and their filter forms in billing/forms.py.

Who sees what (documented in docs/savings-ledger.md):
- administrators: every page, every township; the reports pages are theirs only;
- a township's technologist: every page, their own township only. The township filter is
  forced to theirs; asking for another township is a 404, like any row outside one's scope;
- radiologists: turnaround and volume for every township (they read for all of them, and
  Figure 3 compares the reading team), the exam list behind those numbers; not the money.
Filters are GET parameters validated by a form: a bad value is a form error on the page
(status 400), never a 500."""
