-- Every rate IBKR prints on a row: fxRateToBase of executions, DETAIL cash transactions and
-- SUMMARY positions, per account, date and currency (base per one unit of `currency`). The
-- trades are read from the normalized files directly (stg_trades converts with these rates).
-- kind orders the sources for a deterministic choice: positions (closing rate), trades, cash.
{% set trade_cols = {'account_id': 'varchar', 'date': 'date', 'level_of_detail': 'varchar',
  'currency': 'varchar', 'fx_rate_to_base': 'decimal(38, 10)'} %}
select account_id, date, currency, fx_rate_to_base, 1 as kind
from {{ ref('stg_positions_daily') }}
where fx_rate_to_base > 0 and currency is not null
union all
select account_id, date, currency, fx_rate_to_base, 2
from ({{ read_normalized('trades', trade_cols) }}) as t
where level_of_detail = 'EXECUTION' and fx_rate_to_base > 0 and currency is not null
union all
select account_id, date, currency, fx_rate_to_base, 3
from {{ ref('stg_cash_transactions') }}
where fx_rate_to_base > 0 and currency is not null
