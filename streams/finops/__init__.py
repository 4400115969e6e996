"""FinOps answers over the ClickHouse store: rollups, unit economics, exports and the report.

Modules by concern: :mod:`migrations` (numbered schema changes applied at start-up),
:mod:`rollup_sql` (the hourly and daily rollups), :mod:`model_rates` (catalog rates in
ClickHouse), :mod:`queries` (the questions finance asks), :mod:`forecast` (budget
utilisation and end-of-period forecast), :mod:`focus` (FOCUS 1.2 export), :mod:`report_html`.
"""
