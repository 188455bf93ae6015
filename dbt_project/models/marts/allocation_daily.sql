{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- Daily allocation per account (base currency) and household `ALL` (USD), three dimensions:
--   asset_class  IBKR's own NAV components (cash, stock, options, ...); sums to NAV exactly
--   currency     positions' value_base by instrument currency + cash by currency (the cash
--                report's ending cash on statement end dates, converted with that day's
--                ConversionRates; otherwise all cash in base) + accruals in base
--   symbol       positions' value_base by symbol + CASH + ACCRUALS
-- weight = value / NAV of the day.
{% set components = ['cash', 'stock', 'options', 'bonds', 'commodities', 'funds', 'notes',
  'crypto', 'dividend_accruals', 'interest_accruals'] %}
with nav as (
  select account_id, date, currency, usd_per_base, nav, cash,
         dividend_accruals + interest_accruals as accruals, {{ components | join(', ') }}
  from {{ ref('int_nav_flows') }}
  where account_id <> 'ALL' and {{ in_date_window() }}
),

asset_class as (
  {% for c in components -%}
  select account_id, date, 'asset_class' as dimension, '{{ c }}' as bucket, {{ c }} as value from nav
  {% if not loop.last %}union all{% endif %}
  {% endfor %}
),

positions as (
  select p.account_id, p.date, p.currency, p.symbol, p.value_base
  from {{ ref('stg_positions_daily') }} as p
  where {{ in_date_window('p.date') }}
),

cash_by_currency as (
  select
    b.account_id, b.date, b.currency,
    cast(b.ending_cash * case when b.currency = n.currency then 1 else fx.rate end
      as decimal(38, 10)) as value
  from {{ ref('stg_cash_balances') }} as b
  join nav as n using (account_id, date)
  left join {{ ref('stg_fx_rates') }} as fx
    on fx.account_id = b.account_id and fx.date = b.date and fx.from_currency = b.currency
),

currency as (
  select account_id, date, 'currency' as dimension, currency as bucket, value_base as value
  from positions
  union all
  select account_id, date, 'currency', currency, value from cash_by_currency
  union all
  select account_id, date, 'currency', currency, cash from nav
  where not exists (select 1 from cash_by_currency as c
                    where c.account_id = nav.account_id and c.date = nav.date)
  union all
  select account_id, date, 'currency', currency, accruals from nav
),

symbol as (
  select account_id, date, 'symbol' as dimension, symbol as bucket, value_base as value
  from positions
  union all
  select account_id, date, 'symbol', 'CASH', cash from nav
  union all
  select account_id, date, 'symbol', 'ACCRUALS', accruals from nav
),

per_account as (
  select a.account_id, a.date, n.currency, n.usd_per_base, n.nav, a.dimension, a.bucket,
         sum(a.value) as value
  from (select * from asset_class union all select * from currency union all select * from symbol) as a
  join nav as n using (account_id, date)
  where a.value is not null and a.value <> 0
  group by all
),

household as (
  select
    'ALL' as account_id, p.date, 'USD' as currency, h.nav, p.dimension, p.bucket,
    cast(sum(cast(p.value as double) * p.usd_per_base) as decimal(38, 10)) as value
  from per_account as p
  join {{ ref('int_nav_flows') }} as h on h.account_id = 'ALL' and h.date = p.date
  group by all
)

select account_id, date, currency, dimension, bucket, value,
       cast(value as double) / nullif(cast(nav as double), 0) as weight
from (
  select account_id, date, currency, nav, dimension, bucket, value from per_account
  union all
  select account_id, date, currency, nav, dimension, bucket, value from household
)
