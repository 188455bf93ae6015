-- Income accrued but not yet paid, apart from the cash income of `income`, per account, month,
-- accrual_type and instrument, in base currency (household `ALL` in USD, null-never-0 as in
-- `income`):
--   dividend  ChangeInDividendAccruals rows booked in the month: accrued_gross / accrued_tax /
--             accrued (net) (postings +, reversals -), by conid; open_balance: net amount of
--             the OpenDividendAccruals rows on the month's last statement end (open_balance_date)
--   interest  InterestAccruals windows ending in the month (BASE_SUMMARY row, else the currency
--             rows converted with int_fx_to_base): accrued = interestAccrued + accrualReversal;
--             open_balance: endingAccrualBalance of the month's last window; conid null
{% set amounts = ['accrued_gross', 'accrued_tax', 'accrued', 'open_balance'] %}
with rates as (
  select account_id, date, usd_per_base from {{ ref('int_account_days') }}
),

div_changes as (
  select account_id, date, conid, symbol, gross_amount_base as accrued_gross,
         -tax_base as accrued_tax, net_amount_base as accrued,
         cast(null as decimal(38, 10)) as open_balance
  from {{ ref('stg_dividend_accruals') }} where accrual_kind = 'change'
),

div_open as (
  select account_id, date, conid, symbol, null as accrued_gross, null as accrued_tax,
         null as accrued, net_amount_base as open_balance
  from {{ ref('stg_dividend_accruals') }}
  where accrual_kind = 'open'
  qualify date = max(date) over (partition by account_id, date_trunc('month', date))
),

interest_rows as (
  select i.*, case when i.currency = 'BASE_SUMMARY' then 1 else fx.rate_to_base end as rate,
         count(*) filter (where i.currency = 'BASE_SUMMARY')
           over (partition by i.account_id, i.date) as n_base
  from {{ ref('stg_interest_accruals') }} as i
  left join {{ ref('int_fx_to_base') }} as fx
    on fx.account_id = i.account_id and fx.date = i.date and fx.currency = i.currency
),

interest as (
  select account_id, date, cast(null as varchar) as conid, cast(null as varchar) as symbol,
         null as accrued_gross, null as accrued_tax,
         cast((coalesce(interest_accrued, 0) + coalesce(accrual_reversal, 0)) * rate as decimal(38, 10)) as accrued,
         case when date = max(date) over (partition by account_id, date_trunc('month', date))
              then cast(ending_accrual_balance * rate as decimal(38, 10)) end as open_balance
  from interest_rows
  where (n_base > 0 and currency = 'BASE_SUMMARY') or (n_base = 0 and currency <> 'BASE_SUMMARY')
),

items as (
  select 'dividend' as accrual_type, * from div_changes
  union all by name select 'dividend' as accrual_type, * from div_open
  union all by name select 'interest' as accrual_type, * from interest
),

keyed as (
  select i.*, cast(date_trunc('month', i.date) as date) as month, r.usd_per_base
  from items as i
  asof left join rates as r on r.account_id = i.account_id and r.date <= i.date
),

currencies as (
  select account_id, arg_max(base_currency, date) as currency
  from {{ ref('int_account_days') }} group by account_id
),

per_account as (
  select k.account_id, c.currency, k.month, k.accrual_type, k.conid, min(k.symbol) as symbol,
         {% for a in amounts -%}
         sum({{ a }}) as {{ a }},
         {% endfor -%}
         max(k.date) filter (where k.open_balance is not null) as open_balance_date,
         cast(0 as bigint) as usd_amounts_missing_rate
  from keyed as k left join currencies as c using (account_id)
  group by k.account_id, c.currency, k.month, k.accrual_type, k.conid
),

household as (
  select 'ALL' as account_id, 'USD' as currency, month, accrual_type, conid, min(symbol) as symbol,
         {% for a in amounts -%}
         case when count({{ a }}) > 0 then {{ strict_sum(to_usd('coalesce(' ~ a ~ ', 0)', 'usd_per_base')) }} end as {{ a }},
         {% endfor -%}
         max(date) filter (where open_balance is not null) as open_balance_date,
         cast(count(*) - count(usd_per_base) as bigint) as usd_amounts_missing_rate
  from keyed group by month, accrual_type, conid
)

select account_id, currency, month, cast(year(month) as integer) as year, accrual_type, conid,
       symbol, {% for a in amounts %}{{ a }}, {% endfor %}open_balance_date, usd_amounts_missing_rate
from (select * from per_account union all by name select * from household) as u
