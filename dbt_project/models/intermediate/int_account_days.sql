-- One row per account and day with NAV or account information: base currency and the USD value
-- of one unit of base (usd_per_base, decimal(38, 14)), used to aggregate accounts into the
-- household (`ALL`) in USD. usd_rate_source says where the rate comes from, first match wins:
--   identity         the base is USD (1)
--   ConversionRates  1 / the account's own ConversionRate USD -> base; else any account's
--                    ConversionRate base -> USD that day (an account whose base is USD)
--   fxRateToBase     1 / the fxRateToBase of the account's own USD rows that day (base per USD);
--                    else the fxRateToBase of a USD-based account's rows in this base currency
-- usd_per_base and usd_rate_source are null when no rate is known: household amounts of that
-- day are then null, never 0 (dbt test household_usd_rate_missing warns).
with days as (
  select
    account_id,
    date,
    coalesce(n.base_currency, ai.base_currency, b.base_currency) as base_currency
  from {{ ref('stg_nav_daily') }} as n
  full join {{ ref('stg_account_info') }} as ai using (account_id, date)
  left join {{ ref('int_base_currency') }} as b using (account_id)
),

candidates as (
  -- the account's own rate of USD into its base (base per USD)
  select account_id, date, 1 as priority, 'ConversionRates' as source, {{ reciprocal_rate('rate_to_base') }} as usd_per_base
  from {{ ref('int_fx_to_base') }}
  where currency = 'USD' and rate_source = 'ConversionRates'
  union all
  select account_id, date, 3, 'fxRateToBase', {{ reciprocal_rate('rate_to_base') }}
  from {{ ref('int_fx_to_base') }}
  where currency = 'USD' and rate_source = 'fxRateToBase'
),

usd_accounts as (
  select account_id from {{ ref('int_base_currency') }} where base_currency = 'USD'
),

shared as (
  -- any USD-based account's rate of a currency into USD (USD per unit)
  select date, currency, rate_source, min(rate_to_base) as usd_per_unit
  from {{ ref('int_fx_to_base') }}
  where account_id in (select account_id from usd_accounts) and rate_source <> 'identity'
  group by all
),

options as (
  select d.account_id, d.date, c.priority, c.source, c.usd_per_base
  from days as d join candidates as c using (account_id, date)
  union all
  select d.account_id, d.date, case s.rate_source when 'ConversionRates' then 2 else 4 end,
         s.rate_source, cast(s.usd_per_unit as decimal(38, 14))
  from days as d join shared as s on s.date = d.date and s.currency = d.base_currency
),

best as (
  select account_id, date, usd_per_base, source
  from options
  qualify row_number() over (partition by account_id, date order by priority) = 1
)

select
  d.account_id,
  d.date,
  d.base_currency,
  case when d.base_currency = 'USD' then cast(1 as decimal(38, 14)) else b.usd_per_base end
    as usd_per_base,
  case when d.base_currency = 'USD' then 'identity' else b.source end as usd_rate_source
from days as d
left join best as b using (account_id, date)
