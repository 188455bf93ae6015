{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- End-of-day positions (SUMMARY rows) per account with values in base currency and weight in
-- NAV; household `ALL` rows sum each instrument across accounts in USD.
with per_account as (
  select
    p.account_id, p.date, d.base_currency as currency, d.usd_per_base, n.nav, p.conid, p.symbol, p.description,
    p.asset_category, p.currency as instrument_currency, p.quantity, p.mark_price,
    p.position_value, p.value_base, p.cost_basis_base, p.unrealized_pnl_base, p.source
  from {{ ref('stg_positions_daily') }} as p
  left join {{ ref('int_account_days') }} as d using (account_id, date)
  left join {{ ref('int_nav_flows') }} as n using (account_id, date)
  where {{ in_date_window('p.date') }}
),

household as (
  -- labels: the alphabetically first across accounts (deterministic); amounts in USD, exact
  -- decimal sums, null on days where an account has no USD rate
  select
    'ALL' as account_id, p.date, 'USD' as currency, h.nav, p.conid,
    min(p.symbol) as symbol, min(p.description) as description,
    min(p.asset_category) as asset_category,
    min(p.instrument_currency) as instrument_currency,
    sum(p.quantity) as quantity, min(p.mark_price) as mark_price,
    sum(p.position_value) as position_value,
    {% for c in ['value_base', 'cost_basis_base', 'unrealized_pnl_base'] -%}
    case when h.accounts_without_usd_rate = 0 then {{ strict_sum(to_usd('p.' ~ c, 'p.usd_per_base')) }} end
      as {{ c }},
    {% endfor -%}
    string_agg(distinct p.source, ',' order by p.source) as source
  from per_account as p
  join {{ ref('int_nav_flows') }} as h on h.account_id = 'ALL' and h.date = p.date
  group by p.date, h.nav, h.accounts_without_usd_rate, p.conid
)

select
  account_id, date, currency, conid, symbol, description, asset_category, instrument_currency,
  quantity, mark_price, position_value,
  value_base as value, cost_basis_base as cost_basis, unrealized_pnl_base as unrealized_pnl,
  cast(value_base as double) / nullif(cast(nav as double), 0) as weight,
  source
from (
  select * exclude (usd_per_base) from per_account
  union all by name
  select * from household
)
