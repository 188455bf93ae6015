-- Executions only: ORDER rows aggregate executions and CLOSED_LOT rows split closings by lot.
-- *_base columns convert with the trade's own fxRateToBase (commission assumed in the trade
-- currency unless commission_currency says otherwise, then the day's ConversionRate is used).
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'level_of_detail': 'varchar', 'trade_id': 'varchar',
  'transaction_id': 'varchar', 'ib_order_id': 'varchar', 'ib_exec_id': 'varchar',
  'asset_category': 'varchar', 'symbol': 'varchar', 'conid': 'varchar', 'currency': 'varchar',
  'fx_rate_to_base': 'decimal(38, 10)', 'trade_date': 'date',
  'executed_at': 'timestamp with time zone', 'settle_date': 'date',
  'transaction_type': 'varchar', 'exchange': 'varchar', 'buy_sell': 'varchar',
  'open_close': 'varchar', 'quantity': 'decimal(38, 10)', 'trade_price': 'decimal(38, 10)',
  'trade_money': 'decimal(38, 10)', 'proceeds': 'decimal(38, 10)', 'taxes': 'decimal(38, 10)',
  'commission': 'decimal(38, 10)', 'commission_currency': 'varchar',
  'net_cash': 'decimal(38, 10)', 'close_price': 'decimal(38, 10)',
  'cost_basis': 'decimal(38, 10)', 'realized_pnl': 'decimal(38, 10)',
  'mtm_pnl': 'decimal(38, 10)', 'multiplier': 'decimal(38, 10)', 'notes': 'varchar',
  'statement_sha256': 'varchar'
} %}
with executions as (
  select * from ({{ read_normalized('trades', cols) }}) as src
  where level_of_detail = 'EXECUTION'
)
select
  e.*,
  cast(e.realized_pnl * e.fx_rate_to_base as decimal(38, 10)) as realized_pnl_base,
  cast(e.proceeds * e.fx_rate_to_base as decimal(38, 10)) as proceeds_base,
  cast(
    e.commission * case
      when e.commission_currency is null or e.commission_currency = e.currency then e.fx_rate_to_base
      else coalesce(fx.rate, e.fx_rate_to_base)
    end as decimal(38, 10)
  ) as commission_base
from executions as e
left join {{ ref('stg_fx_rates') }} as fx
  -- ConversionRates convert into the account's base currency (their to_currency)
  on fx.account_id = e.account_id and fx.date = e.date and fx.from_currency = e.commission_currency
