-- IBKR's NAV components add up to the total (to the cent) on every account day.
select account_id, date, nav,
  cash + stock + options + bonds + commodities + funds + notes + crypto
    + dividend_accruals + interest_accruals as components
from {{ ref('daily_nav') }}
where account_id <> 'ALL'
  and abs(nav - (coalesce(cash, 0) + coalesce(stock, 0) + coalesce(options, 0) + coalesce(bonds, 0)
    + coalesce(commodities, 0) + coalesce(funds, 0) + coalesce(notes, 0) + coalesce(crypto, 0)
    + coalesce(dividend_accruals, 0) + coalesce(interest_accruals, 0))) > 0.01
