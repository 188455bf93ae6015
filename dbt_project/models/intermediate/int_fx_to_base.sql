-- Rate of each currency into each account's base currency per day (rate_to_base = base per one
-- unit of `currency`), and its source (rate_source):
--   identity         the base currency itself (1)
--   ConversionRates  the account's ConversionRates row (from_currency -> its base)
--   fxRateToBase     else the rate IBKR prints on the account's rows of that currency that day
--                    (positions first, then executions, then cash transactions; lowest rate
--                    among equal sources, so the choice is deterministic)
-- Rows exist for every (account, date, currency) with a ConversionRate or a row carrying a
-- rate, plus the base currency on each of those account days.
with bases as (
  select account_id, base_currency from {{ ref('int_base_currency') }}
),

conversion as (
  select fx.account_id, fx.date, fx.from_currency as currency, min(fx.rate) as rate
  from {{ ref('stg_fx_rates') }} as fx
  join bases as b on b.account_id = fx.account_id and b.base_currency = fx.to_currency
  group by all
),

row_rates as (
  select account_id, date, currency, fx_rate_to_base as rate
  from {{ ref('int_fx_rows') }}
  qualify row_number() over (partition by account_id, date, currency
                             order by kind, fx_rate_to_base) = 1
),

candidates as (
  select account_id, date, currency, rate, 2 as priority, 'ConversionRates' as rate_source
  from conversion
  union all
  select account_id, date, currency, rate, 3, 'fxRateToBase' from row_rates
  union all
  select distinct r.account_id, r.date, b.base_currency, cast(1 as decimal(38, 10)), 1, 'identity'
  from (select account_id, date from conversion union select account_id, date from row_rates) as r
  join bases as b using (account_id)
  where b.base_currency is not null
)

select account_id, date, currency, rate as rate_to_base, rate_source
from candidates
qualify row_number() over (partition by account_id, date, currency order by priority) = 1
