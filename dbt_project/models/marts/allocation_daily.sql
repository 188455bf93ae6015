{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- Daily allocation per account (base currency) and household `ALL` (USD), four dimensions:
--   asset_class     IBKR's own NAV components (cash, stock, options, ...); sums to NAV exactly
--   asset_category  positions' value_base by IBKR assetCategory exactly as IBKR writes it
--                   (STK, OPT, CFD, IOPT, CRYPTO, ... any value) + CASH + ACCRUALS
--   currency        positions' value_base by instrument currency + cash by currency + accruals
--                   in base. Cash by currency: the cash report's ending cash on statement end
--                   dates, converted with the day's rate (int_fx_to_base: ConversionRates, else
--                   the fxRateToBase IBKR prints on that day's rows); a currency without any
--                   rate that day gets the rest of the NAV's cash (cash_base - the converted
--                   currencies), so no currency's cash is lost (several such currencies share
--                   one bucket 'CHF+GBP'). Other days: all cash in base.
--   symbol          positions' value_base by symbol + CASH + ACCRUALS
-- weight = value / NAV of the day. Household values are exact decimal sums of each account's
-- amount converted with to_usd; null (never a partial sum) on days where an account has no USD
-- rate.
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
  select p.account_id, p.date, p.currency, p.symbol, p.asset_category, p.value_base
  from {{ ref('stg_positions_daily') }} as p
  where {{ in_date_window('p.date') }}
),

cash_rows as (
  select
    b.account_id, b.date, b.currency, b.ending_cash,
    case when b.currency = n.currency then 1 else fx.rate_to_base end as rate
  from {{ ref('stg_cash_balances') }} as b
  join nav as n using (account_id, date)
  left join {{ ref('int_fx_to_base') }} as fx
    on fx.account_id = b.account_id and fx.date = b.date and fx.currency = b.currency
),

converted as (
  select account_id, date, currency, cast(ending_cash * rate as decimal(38, 10)) as value
  from cash_rows
  where rate is not null or ending_cash = 0
),

unconverted as (
  select
    c.account_id, c.date,
    string_agg(c.currency, '+' order by c.currency) as currency,
    any_value(n.cash) - coalesce((select sum(v.value) from converted as v
                                  where v.account_id = c.account_id and v.date = c.date), 0) as value
  from cash_rows as c
  join nav as n using (account_id, date)
  where c.rate is null and c.ending_cash <> 0
  group by c.account_id, c.date
),

cash_by_currency as (
  select account_id, date, currency, value from converted
  union all
  select account_id, date, currency, value from unconverted
),

currency as (
  select account_id, date, 'currency' as dimension, currency as bucket, value_base as value
  from positions
  union all
  select account_id, date, 'currency', currency, value from cash_by_currency
  union all
  select account_id, date, 'currency', currency, cash from nav
  where not exists (select 1 from cash_rows as c
                    where c.account_id = nav.account_id and c.date = nav.date)
  union all
  select account_id, date, 'currency', currency, accruals from nav
),

asset_category as (
  select account_id, date, 'asset_category' as dimension,
         coalesce(asset_category, '(none)') as bucket, value_base as value
  from positions
  union all
  select account_id, date, 'asset_category', 'CASH', cash from nav
  union all
  select account_id, date, 'asset_category', 'ACCRUALS', accruals from nav
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
  from (
    select * from asset_class
    union all select * from asset_category
    union all select * from currency
    union all select * from symbol
  ) as a
  join nav as n using (account_id, date)
  where a.value is not null and a.value <> 0
  group by all
),

household as (
  select
    'ALL' as account_id, p.date, 'USD' as currency, h.nav, p.dimension, p.bucket,
    case when h.accounts_without_usd_rate = 0 then {{ strict_sum(to_usd('p.value', 'p.usd_per_base')) }} end
      as value
  from per_account as p
  join {{ ref('int_nav_flows') }} as h on h.account_id = 'ALL' and h.date = p.date
  group by p.date, h.nav, h.accounts_without_usd_rate, p.dimension, p.bucket
)

select account_id, date, currency, dimension, bucket, value,
       cast(value as double) / nullif(cast(nav as double), 0) as weight
from (
  select account_id, date, currency, nav, dimension, bucket, value from per_account
  union all
  select account_id, date, currency, nav, dimension, bucket, value from household
)
