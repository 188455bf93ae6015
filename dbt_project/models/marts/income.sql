-- Income per account, instrument (conid; interest rows have none) and month of the income event
-- (see int_income_items: withholding tax sits in the month of its dividend, reversals net),
-- in the account's base currency; household `ALL` in USD (each item converted with its
-- account's usd_per_base of the item's day, as-of the last known day; an ALL amount with any
-- item lacking a USD rate is null, never a partial sum: usd_amounts_missing_rate counts them).
--   dividends           Dividends (gross, reversals netted)
--   payment_in_lieu     Payment In Lieu Of Dividends (gross)
--   withholding_tax     withholding matched to the dividends / payments in lieu (negative)
--   dividends_net       dividends + payment_in_lieu + withholding_tax
--   withholding_unmatched  withholding tax with no dividend in the data (e.g. on interest)
--   interest_received / interest_paid (paid negative)
--   total_income        dividends_net + withholding_unmatched + interest_received + interest_paid
-- Amounts are signed as cash (+ received). Labels: alphabetically first symbol of the instrument.
{% set amounts = ['dividends', 'payment_in_lieu', 'withholding_tax', 'dividends_net',
  'withholding_unmatched', 'interest_received', 'interest_paid', 'total_income'] %}
with rates as (
  select account_id, date, usd_per_base from {{ ref('int_account_days') }}
),

items as (
  select
    i.*,
    case when i.income_kind = 'dividend' then i.amount_base end as dividends,
    case when i.income_kind = 'payment_in_lieu' then i.amount_base end as payment_in_lieu,
    case when i.income_kind = 'withholding_tax' and i.matched then i.amount_base end as withholding_tax,
    case when i.income_kind in ('dividend', 'payment_in_lieu')
           or (i.income_kind = 'withholding_tax' and i.matched) then i.amount_base end as dividends_net,
    case when i.income_kind = 'withholding_tax' and not i.matched then i.amount_base end as withholding_unmatched,
    case when i.income_kind = 'interest_received' then i.amount_base end as interest_received,
    case when i.income_kind = 'interest_paid' then i.amount_base end as interest_paid,
    i.amount_base as total_income,
    r.usd_per_base
  from {{ ref('int_income_items') }} as i
  asof left join rates as r on r.account_id = i.account_id and r.date <= i.date
),

keyed as (
  select *, cast(date_trunc('month', event_date) as date) as month from items
),

currencies as (
  select account_id, arg_max(base_currency, date) as currency
  from {{ ref('int_account_days') }} group by account_id
),

per_account as (
  select
    k.account_id, c.currency, k.month, k.event_conid as conid,
    min(k.event_symbol) as symbol,
    {% for a in amounts -%}
    coalesce(sum({{ a }}), 0) as {{ a }},
    {% endfor -%}
    count(*) as n_items,
    cast(0 as bigint) as usd_amounts_missing_rate
  from keyed as k
  left join currencies as c using (account_id)
  group by k.account_id, c.currency, k.month, k.event_conid
),

household as (
  select
    'ALL' as account_id, 'USD' as currency, month, event_conid as conid,
    min(event_symbol) as symbol,
    {% for a in amounts -%}
    {{ strict_sum(to_usd('coalesce(' ~ a ~ ', 0)', 'usd_per_base')) }} as {{ a }},
    {% endfor -%}
    count(*) as n_items,
    cast(count(*) - count(usd_per_base) as bigint) as usd_amounts_missing_rate
  from keyed
  group by month, event_conid
)

select account_id, currency, month, cast(year(month) as integer) as year, conid, symbol,
       {% for a in amounts %}{{ a }}, {% endfor %}n_items, usd_amounts_missing_rate
from (select * from per_account union all by name select * from household) as u
