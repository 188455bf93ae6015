-- Income cash transactions (DETAIL), each tied to its income event:
--   dividend          Dividends
--   payment_in_lieu   Payment In Lieu Of Dividends
--   withholding_tax   Withholding Tax (and 871(m) withholding), matched to a dividend event
--   interest_received Broker/Bond Interest Received (and Interest Received types)
--   interest_paid     Broker/Bond Interest Paid
-- A dividend event is (account, action id) when IBKR gives actionID, else (account, instrument,
-- day). A withholding row joins the event of a dividend row of the same account with the same
-- action id; else of the same instrument (conid, else symbol) on the same day; else it is its own
-- event (withholding on interest, or without a matching dividend in the data). Reversals (code
-- Re, negative dividends, positive withholding) carry the event's key when they share its action
-- id, so they net against the original in its month; without an action id they net in their own.
-- event_date: the first day of the event's dividend rows (its pay date), else the row's day.
with cash as (
  select
    *,
    case
      when type = 'Dividends' then 'dividend'
      when type like 'Payment In Lieu%' then 'payment_in_lieu'
      when type like 'Withholding%' or type = '871(m) Withholding' then 'withholding_tax'
      when (type like '%Interest Received' or type like '%Interest Paid')
           and upper(coalesce(description, '')) not like '%BORROW%'  -- a borrow fee: int_fee_items
        then case when amount < 0 or type like '%Paid' then 'interest_paid' else 'interest_received' end
    end as income_kind,
    coalesce(conid, symbol) as instrument
  from {{ ref('stg_cash_transactions') }}
),

income as (
  select * from cash where income_kind is not null
),

dividends as (
  select *,
         case when action_id is not null then 'a:' || action_id
              else 'i:' || coalesce(instrument, '?') || ':' || cast(date as varchar) end as event_key
  from income
  where income_kind in ('dividend', 'payment_in_lieu')
),

div_actions as (
  select distinct account_id, action_id, event_key from dividends where action_id is not null
),

div_days as (
  select account_id, instrument, date, min(event_key) as event_key
  from dividends where instrument is not null group by all
),

withholding as (
  select w.*,
         coalesce(a.event_key, d.event_key, 't:' || coalesce(w.transaction_id, cast(w.date as varchar)))
           as event_key,
         a.event_key is not null or d.event_key is not null as matched
  from income as w
  left join div_actions as a on a.account_id = w.account_id and a.action_id = w.action_id
  left join div_days as d
    on d.account_id = w.account_id and d.instrument = w.instrument and d.date = w.date
  where w.income_kind = 'withholding_tax'
),

interest as (
  select *, 't:' || coalesce(transaction_id, cast(date as varchar)) as event_key
  from income where income_kind in ('interest_received', 'interest_paid')
),

items as (
  select *, true as matched from dividends
  union all by name
  select * from withholding
  union all by name
  select *, true as matched from interest
),

events as (
  select account_id, event_key,
         coalesce(min(date) filter (where income_kind in ('dividend', 'payment_in_lieu') and amount > 0),
                  min(date)) as event_date,
         min(conid) as event_conid, min(symbol) as event_symbol
  from items group by all
)

select
  i.account_id, i.date, i.transaction_id, i.income_kind, i.type, i.currency, i.fx_rate_to_base,
  i.amount, i.amount_base, i.conid, i.symbol, i.isin, i.action_id, i.code, i.description,
  i.event_key, i.matched, e.event_date,
  coalesce(e.event_conid, i.conid) as event_conid,
  coalesce(e.event_symbol, i.symbol) as event_symbol
from items as i
join events as e using (account_id, event_key)
