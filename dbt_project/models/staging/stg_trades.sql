-- Executions only: ORDER rows aggregate executions and CLOSED_LOT rows split closings by lot.
-- realized_pnl_base / proceeds_base convert with the trade's own fxRateToBase. commission_base
-- converts the commission with the rate of ITS currency (ibCommissionCurrency, which may differ
-- from the trade currency, e.g. CHF commission on a USD.CHF conversion in a CHF account):
--   1                   commission_currency = the account's base currency (int_base_currency)
--   fx_rate_to_base     commission_currency = the trade currency, or not given
--   int_fx_to_base      else the day's ConversionRate, else a same-day row's fxRateToBase
-- commission_rate_source says which (identity, trade, ConversionRates, fxRateToBase); a
-- commission in a currency without any rate that day has a null commission_base.
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
  cast(e.commission * case
      when e.commission_currency = b.base_currency then 1
      when e.commission_currency is null or e.commission_currency = e.currency then e.fx_rate_to_base
      else fx.rate_to_base
    end as decimal(38, 10)) as commission_base,
  case
    when e.commission_currency = b.base_currency then 'identity'
    when e.commission_currency is null or e.commission_currency = e.currency then 'trade'
    else fx.rate_source
  end as commission_rate_source
from executions as e
left join {{ ref('int_base_currency') }} as b on b.account_id = e.account_id
left join {{ ref('int_fx_to_base') }} as fx
  on fx.account_id = e.account_id and fx.date = e.date and fx.currency = e.commission_currency
