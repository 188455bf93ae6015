-- One row per closed tax lot (Trades CLOSED_LOT rows), per account. Money in the row's
-- currency (`currency`) and in the account's base currency (*_base, x fxRateToBase of the row).
--   quantity          closed quantity, signed as IBKR writes it (a long lot sold: negative)
--   cost_basis        the lot's cost as IBKR writes it (IBKR's sign)
--   proceeds          cost_basis + realized_pnl: what closing the lot brought in, net of
--                     commission (IBKR leaves proceeds empty on lot rows)
--   realized_pnl      fifoPnlRealized
--   holding_days      close_date - open_date (null while the open date is unknown)
--   term              'long' when held more than 365 days, else 'short' (term_source
--                     'holding_period'); without an open date, IBKR's notes code LT / ST
--                     (term_source 'ibkr_notes'); else null ('unknown')
select
  account_id,
  conid,
  symbol,
  asset_category,
  currency,
  open_date,
  close_date,
  lot_open_at,
  executed_at as closed_at,
  quantity,
  cost_basis,
  cost_basis + realized_pnl as proceeds,
  realized_pnl,
  cost_basis_base,
  cast((cost_basis + realized_pnl) * fx_rate_to_base as decimal(38, 10)) as proceeds_base,
  realized_pnl_base,
  fx_rate_to_base,
  close_date - open_date as holding_days,
  case
    when open_date is not null then case when close_date - open_date > 365 then 'long' else 'short' end
    when regexp_matches(coalesce(notes, ''), '(^|;)LT(;|$)') then 'long'
    when regexp_matches(coalesce(notes, ''), '(^|;)ST(;|$)') then 'short'
  end as term,
  case
    when open_date is not null then 'holding_period'
    when regexp_matches(coalesce(notes, ''), '(^|;)(LT|ST)(;|$)') then 'ibkr_notes'
    else 'unknown'
  end as term_source,
  transaction_id,
  ib_order_id,
  notes
from {{ ref('stg_closed_lots') }}
