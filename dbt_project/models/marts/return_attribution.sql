-- The change in NAV per account and period split into parts that add up to it exactly:
--   change_in_nav = market_effect + income + fees_and_commissions + fx_translation
--                   + external_flows + other
-- (parts defined in int_attribution_days; market_effect is the residual after the parts read
-- from the data). Base currency per account; household `ALL` (months only) in USD.
-- period_type:
--   month      NAV days of the calendar month; change from the last NAV before the month
--              (start_date) to the month's last NAV (end_date)
--   statement  a ChangeInNAV window [from_date, to_date] of the account, with IBKR's own
--              figures beside ours (ibkr_*: ibkr_change_in_nav = endingValue - startingValue;
--              ibkr_market = mtm + realized + changeInUnrealized; ibkr_income = dividends +
--              withholdingTax + interest; ibkr_commissions_and_other_fees = commissions +
--              otherFees; ibkr_fx_translation; ibkr_external_flows = depositsWithdrawals +
--              internalCashTransfers + assetTransfers; ibkr_other)
-- ALL: every account-day part x usd_per_base of the day; fx_translation also holds the
-- translation of each account's previous NAV into USD (nav(prev) x (usd_per_base(day) -
-- usd_per_base(prev))), market_effect the rest; null (never partial) when an account-day of
-- the month has no USD rate (days_missing_usd_rate counts them).
{% set parts = ['change_in_nav', 'market_effect', 'income', 'fees_and_commissions',
  'fx_translation', 'external_flows', 'other'] %}
with days as (
  select * from {{ ref('int_attribution_days') }}
),

currencies as (
  select account_id, arg_max(base_currency, date) as currency
  from {{ ref('int_account_days') }} group by account_id
),

months as (
  select
    account_id, 'month' as period_type,
    cast(date_trunc('month', date) as date) as period_start,
    cast(last_day(date) as date) as period_end,
    min(prev_date) as start_date, max(date) as end_date,
    arg_min(nav_start, date) as nav_start, arg_max(nav_end, date) as nav_end,
    {% for p in parts -%}
    {{ strict_sum(p) }} as {{ p }},
    {% endfor -%}
    count(*) as n_days,
    cast(sum(fx_positions_without_rate) as bigint) as fx_positions_without_rate
  from days
  group by account_id, date_trunc('month', date), last_day(date)
),

statements as (
  select
    c.account_id, 'statement' as period_type, c.from_date as period_start, c.to_date as period_end,
    min(d.prev_date) as start_date, max(d.date) as end_date,
    arg_min(d.nav_start, d.date) as nav_start, arg_max(d.nav_end, d.date) as nav_end,
    {% for p in parts -%}
    {{ strict_sum('d.' ~ p) }} as {{ p }},
    {% endfor -%}
    count(*) as n_days,
    cast(sum(d.fx_positions_without_rate) as bigint) as fx_positions_without_rate,
    any_value(c.ending_value_base - c.starting_value_base) as ibkr_change_in_nav,
    any_value(coalesce(c.mtm_base, 0) + coalesce(c.realized_base, 0)
              + coalesce(c.change_in_unrealized_base, 0)) as ibkr_market,
    any_value(coalesce(c.dividends_base, 0) + coalesce(c.withholding_tax_base, 0)
              + coalesce(c.interest_base, 0)) as ibkr_income,
    any_value(coalesce(c.commissions_base, 0) + coalesce(c.other_fees_base, 0))
      as ibkr_commissions_and_other_fees,
    any_value(c.fx_translation_base) as ibkr_fx_translation,
    any_value(coalesce(c.deposits_withdrawals_base, 0) + coalesce(c.internal_cash_transfers_base, 0)
              + coalesce(c.asset_transfers_base, 0)) as ibkr_external_flows,
    any_value(c.other_base) as ibkr_other
  from {{ ref('stg_change_in_nav') }} as c
  join days as d on d.account_id = c.account_id and d.date between c.from_date and c.to_date
  group by c.account_id, c.from_date, c.to_date
),

usd_days as (
  select
    d.*,
    r.usd_per_base as usd_day,
    -- a zero opening NAV (the day before inception) needs no rate
    case when d.nav_start = 0 then coalesce(rp.usd_per_base, r.usd_per_base) else rp.usd_per_base end
      as usd_prev
  from days as d
  left join {{ ref('int_account_days') }} as r on r.account_id = d.account_id and r.date = d.date
  left join {{ ref('int_account_days') }} as rp on rp.account_id = d.account_id and rp.date = d.prev_date
),

usd_parts as (
  select
    date,
    {{ to_usd('nav_end', 'usd_day') }} - {{ to_usd('nav_start', 'usd_prev') }} as change_in_nav,
    {{ to_usd('income', 'usd_day') }} as income,
    {{ to_usd('fees_and_commissions', 'usd_day') }} as fees_and_commissions,
    {{ to_usd('fx_translation', 'usd_day') }}
      + ({{ to_usd('nav_start', 'usd_day') }} - {{ to_usd('nav_start', 'usd_prev') }}) as fx_translation,
    {{ to_usd('external_flows', 'usd_day') }} as external_flows,
    {{ to_usd('other', 'usd_day') }} as other,
    fx_positions_without_rate,
    case when usd_day is null or usd_prev is null then 1 else 0 end as missing_rate
  from usd_days
),

household as (
  select
    'ALL' as account_id, 'USD' as currency, 'month' as period_type,
    cast(date_trunc('month', date) as date) as period_start,
    cast(last_day(date) as date) as period_end,
    min(date) as end_date_min, max(date) as end_date,
    {% for p in parts if p != 'market_effect' -%}
    {{ strict_sum(p) }} as {{ p }},
    {% endfor -%}
    count(*) as n_days,
    cast(sum(fx_positions_without_rate) as bigint) as fx_positions_without_rate,
    cast(sum(missing_rate) as bigint) as days_missing_usd_rate
  from usd_parts
  group by date_trunc('month', date), last_day(date)
)

select m.*, c.currency, cast(0 as bigint) as days_missing_usd_rate
from (select * from months union all by name select * from statements) as m
left join currencies as c using (account_id)
union all by name
select * exclude (end_date_min),
       change_in_nav - income - fees_and_commissions - fx_translation - external_flows - other
         as market_effect
from household
