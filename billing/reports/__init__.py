"""The dashboards' reports, one module each (savings, volume, turnaround), with the one
filter builder (filters.py). billing.dashboards gathers their public names for the pages."""
