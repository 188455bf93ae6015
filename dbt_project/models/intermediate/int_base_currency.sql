-- The base currency of every account seen in any normalized table, and where it comes from
-- (base_currency_source): AccountInformation (its latest day), else EquitySummary (nav_daily),
-- else ChangeInNAV, else inferred as the currency whose rows carry fxRateToBase = 1 most often
-- (ties: alphabetical). Null when nothing tells.
with declared as (
  select account_id, 1 as priority, 'AccountInformation' as source,
         arg_max(base_currency, date) as base_currency
  from {{ ref('stg_account_info') }} where base_currency is not null group by account_id
  union all
  select account_id, 2, 'EquitySummary', arg_max(base_currency, date)
  from {{ ref('stg_nav_daily') }} where base_currency is not null group by account_id
  union all
  select account_id, 3, 'ChangeInNAV', base_currency
  from {{ ref('stg_change_in_nav') }} where base_currency is not null
  qualify row_number() over (partition by account_id order by to_date desc, from_date, base_currency) = 1
),

unit_rates as (
  select account_id, currency, count(*) as n
  from {{ ref('int_fx_rows') }}
  where fx_rate_to_base = 1
  group by all
),

inferred as (
  select account_id, 4 as priority, 'fxRateToBase=1' as source, currency as base_currency
  from unit_rates
  qualify row_number() over (partition by account_id order by n desc, currency) = 1
),

accounts as (
  select account_id from {{ ref('stg_account_info') }}
  union select account_id from {{ ref('stg_nav_daily') }}
  union select account_id from {{ ref('stg_change_in_nav') }}
  union select account_id from {{ ref('int_fx_rows') }}
  union select account_id from {{ ref('stg_cash_balances') }}
),

ranked as (
  select account_id, arg_min(base_currency, priority) as base_currency,
         arg_min(source, priority) as base_currency_source
  from (select * from declared union all select * from inferred)
  group by account_id
)

select a.account_id, r.base_currency, r.base_currency_source
from accounts as a
left join ranked as r using (account_id)
