-- Cash flows per account and NAV date in base currency, signed as cash (+ in, - out).
-- A flow reported on a date without NAV (e.g. a weekend) is booked on the next NAV date,
-- so it still counts at the start of the day whose NAV first includes it.
-- External flows are deposits/withdrawals and cash transfers (stg_cash_transactions) plus
-- positions transferred in or out (stg_transfers value_base: ACATS, ATON, FOP, internal), as
-- IBKR's TWR counts assetTransfers: a position that arrives is capital, not performance.
with nav_dates as (
  select account_id, date from {{ ref('stg_nav_daily') }}
),

cash as (
  select account_id, date, flow_kind, amount_base from {{ ref('stg_cash_transactions') }}
  where flow_kind <> 'other'
  union all
  select account_id, date, 'external' as flow_kind, value_base from {{ ref('stg_transfers') }}
  union all
  select account_id, date, 'commission' as flow_kind, commission_base from {{ ref('stg_trades') }}
),

booked as (
  select n.account_id, n.date, c.flow_kind, c.amount_base
  from cash as c
  asof join nav_dates as n
    on n.account_id = c.account_id and n.date >= c.date
)

select
  account_id,
  date,
  coalesce(sum(amount_base) filter (where flow_kind = 'external'), 0) as external_flow_base,
  coalesce(sum(amount_base) filter (where flow_kind = 'income'), 0) as income_base,
  coalesce(sum(amount_base) filter (where flow_kind = 'cost'), 0) as fees_taxes_base,
  coalesce(sum(amount_base) filter (where flow_kind = 'commission'), 0) as commissions_base
from booked
group by all
