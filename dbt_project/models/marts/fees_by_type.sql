-- Fees and commissions per account, fee_type (see int_fee_items) and month, in base currency
-- (household `ALL` in USD: each item converted with its account's usd_per_base of its day,
-- as-of the last known day; null, never a partial sum, when an item has no USD rate:
-- usd_amounts_missing_rate counts them). amount is signed as cash: a charge is negative.
with rates as (
  select account_id, date, usd_per_base from {{ ref('int_account_days') }}
),

items as (
  select i.*, cast(date_trunc('month', i.date) as date) as month, r.usd_per_base
  from {{ ref('int_fee_items') }} as i
  asof left join rates as r on r.account_id = i.account_id and r.date <= i.date
),

currencies as (
  select account_id, arg_max(base_currency, date) as currency
  from {{ ref('int_account_days') }} group by account_id
)

select i.account_id, c.currency, i.month, cast(year(i.month) as integer) as year, i.fee_type,
       {{ strict_sum('i.amount_base') }} as amount, count(*) as n_items,
       cast(0 as bigint) as usd_amounts_missing_rate
from items as i left join currencies as c using (account_id)
group by i.account_id, c.currency, i.month, i.fee_type
union all
select 'ALL', 'USD', month, cast(year(month) as integer), fee_type,
       {{ strict_sum(to_usd('amount_base', 'usd_per_base')) }}, count(*),
       cast(count(*) - count(usd_per_base) as bigint)
from items
group by month, fee_type
