-- NAV, its components and the day's cash flows per account (in its base currency) and for the
-- household `ALL` (every account converted to USD; a date gets an `ALL` row only when every
-- account with NAV that day has a USD rate). Full history; the daily marts window it.
{% set amounts = ['nav', 'cash', 'stock', 'options', 'bonds', 'commodities', 'funds', 'notes',
  'crypto', 'dividend_accruals', 'interest_accruals', 'external_flow', 'income', 'fees_taxes',
  'commissions'] %}
with per_account as (
  select
    n.account_id,
    n.date,
    d.base_currency as currency,
    d.usd_per_base,
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
    coalesce(f.commissions_base, 0) as commissions
  from {{ ref('stg_nav_daily') }} as n
  join {{ ref('int_account_days') }} as d using (account_id, date)
  left join {{ ref('int_daily_flows') }} as f using (account_id, date)
),

household as (
  select
    'ALL' as account_id,
    date,
    'USD' as currency,
    cast(1 as double) as usd_per_base,
    {% for a in amounts -%}
    cast(sum(cast({{ a }} as double) * usd_per_base) as decimal(38, 10)) as {{ a }}{{ "," if not loop.last }}
    {% endfor %}
  from per_account
  group by date
  having count(*) = count(usd_per_base)
)

select
  account_id, date, currency,
  {% for a in amounts %}{{ a }}, {% endfor %}
  fees_taxes + commissions as costs,
  usd_per_base
from (select * from per_account union all by name select * from household) as u
