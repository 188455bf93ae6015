-- One row per account and day with NAV or account information: base currency and the USD value of one unit of base
-- (usd_per_base), used to aggregate accounts into the household (`ALL`) in USD.
-- usd_per_base: 1 for USD bases; else 1 / (the account's own ConversionRate USD -> base);
-- else any account's rate base -> USD that day; null when no rate is known.
with days as (
  select
    account_id,
    date,
    coalesce(n.base_currency, ai.base_currency) as base_currency
  from {{ ref('stg_nav_daily') }} as n
  full join {{ ref('stg_account_info') }} as ai using (account_id, date)
),

own_rate as (
  select account_id, date, to_currency, max(rate) as rate
  from {{ ref('stg_fx_rates') }}
  where from_currency = 'USD'
  group by all
),

any_rate as (
  select date, from_currency, max(rate) as rate
  from {{ ref('stg_fx_rates') }}
  where to_currency = 'USD'
  group by all
)

select
  d.account_id,
  d.date,
  d.base_currency,
  case
    when d.base_currency = 'USD' then cast(1 as double)
    when o.rate is not null then 1.0 / cast(o.rate as double)
    else cast(a.rate as double)
  end as usd_per_base
from days as d
left join own_rate as o
  on o.account_id = d.account_id and o.date = d.date and o.to_currency = d.base_currency
left join any_rate as a
  on a.date = d.date and a.from_currency = d.base_currency
