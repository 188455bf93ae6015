-- NAV, its components and the day's cash flows per account (in its base currency) and for the
-- household `ALL` (every account converted to USD with to_usd, row by row to decimal(38, 10),
-- then summed exactly). An `ALL` row whose day has an account without a USD rate has null
-- amounts (never a partial sum) and counts those accounts in accounts_without_usd_rate.
-- usd_rate_source: see int_account_days. Full history; the daily marts window it.
{% set amounts = ['nav', 'cash', 'stock', 'options', 'bonds', 'commodities', 'funds', 'notes',
  'crypto', 'dividend_accruals', 'interest_accruals', 'external_flow', 'income', 'fees_taxes',
  'commissions'] %}
with per_account as (
  select
    n.account_id,
    n.date,
    d.base_currency as currency,
    d.usd_per_base,
    d.usd_rate_source,
    n.total_base as nav,
    n.cash_base as cash,
    n.stock_base as stock,
    n.options_base as options,
    n.bonds_base as bonds,
    n.commodities_base as commodities,
    n.funds_base as funds,
    n.notes_base as notes,
    n.crypto_base as crypto,
    n.dividend_accruals_base as dividend_accruals,
    n.interest_accruals_base as interest_accruals,
    coalesce(f.external_flow_base, 0) as external_flow,
    coalesce(f.income_base, 0) as income,
    coalesce(f.fees_taxes_base, 0) as fees_taxes,
    coalesce(f.commissions_base, 0) as commissions,
    cast(null as bigint) as accounts_without_usd_rate
  from {{ ref('stg_nav_daily') }} as n
  join {{ ref('int_account_days') }} as d using (account_id, date)
  left join {{ ref('int_daily_flows') }} as f using (account_id, date)
),

household as (
  select
    'ALL' as account_id,
    date,
    'USD' as currency,
    cast(1 as decimal(38, 14)) as usd_per_base,
    'identity' as usd_rate_source,
    count(*) - count(usd_per_base) as accounts_without_usd_rate,
    {% for a in amounts -%}
    case when count(*) = count(usd_per_base) then sum({{ to_usd(a, 'usd_per_base') }}) end as {{ a }}{{ "," if not loop.last }}
    {% endfor %}
  from per_account
  group by date
)

select
  account_id, date, currency,
  {% for a in amounts %}{{ a }}, {% endfor %}
  fees_taxes + commissions as costs,
  usd_per_base,
  usd_rate_source,
  accounts_without_usd_rate
from (select * from per_account union all by name select * from household) as u
