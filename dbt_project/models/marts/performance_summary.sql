-- Performance per account (base currency) and household `ALL` (USD) as of each one's last
-- return date, over MTD, QTD, YTD, 1Y (the 365 days ending on as_of_date) and ITD (since
-- inception). Formulas match quantstats 0.0.86 on the daily returns of the period:
--   twr          prod(1 + r) - 1
--   cagr         (1 + twr) ^ (periods_per_year / n) - 1   (years = n / periods_per_year)
--   volatility   stddev_samp(r) * sqrt(periods_per_year)
--   sharpe       avg(x) / stddev_samp(x) * sqrt(periods_per_year),  x = r - rf_d
--   sortino      avg(x) / sqrt(sum(x^2 where x < 0) / n) * sqrt(periods_per_year)
--   rf_d         (1 + var risk_free_rate) ^ (1 / periods_per_year) - 1
--   max_drawdown min(wealth / max(1, running max wealth) - 1) within the period, with the
--                episode's first underwater day, trough and recovery (null if not recovered).
-- The money-weighted return (XIRR) is computed in Python (ibpipeline.finance.returns.xirr).
-- Days without a return (null daily_return: no previous NAV and no funding) are left out of
-- every statistic alike. Floating-point aggregates run in date order (ORDER BY inside the
-- aggregate), so identical inputs give bit-identical results whatever the thread schedule.
{% set ppy = var('periods_per_year') %}
with returns as (
  select account_id, date, currency, daily_return
  from {{ ref('int_returns') }}
  where daily_return is not null
),

bounds as (
  select account_id, min(date) as first_date, max(date) as as_of_date
  from returns
  group by account_id
),

periods as (
  select account_id, as_of_date, 'MTD' as period, date_trunc('month', as_of_date)::date as start_date from bounds
  union all
  select account_id, as_of_date, 'QTD', date_trunc('quarter', as_of_date)::date from bounds
  union all
  select account_id, as_of_date, 'YTD', date_trunc('year', as_of_date)::date from bounds
  union all
  select account_id, as_of_date, '1Y', (as_of_date - interval 1 year + interval 1 day)::date from bounds
  union all
  select account_id, as_of_date, 'ITD', first_date from bounds
),

windowed as (
  select
    p.account_id, p.period, p.as_of_date, r.date, r.currency, r.daily_return,
    r.daily_return - {{ rf_per_period() }} as excess,
    product(1 + r.daily_return) over w as wealth
  from periods as p
  join returns as r
    on r.account_id = p.account_id and r.date >= p.start_date and r.date <= p.as_of_date
  window w as (partition by p.account_id, p.period order by r.date
               rows between unbounded preceding and current row)
),

underwater as (
  select
    *,
    wealth / greatest(1.0, max(wealth) over (partition by account_id, period order by date
      rows between unbounded preceding and current row)) - 1 as drawdown
  from windowed
),

stats as (
  select
    account_id,
    period,
    min(currency) as currency,
    min(date) as start_date,
    min(as_of_date) as end_date,
    count(daily_return) as n_days,
    product(1 + daily_return order by date) - 1 as twr,
    stddev_samp(daily_return order by date) * sqrt({{ ppy }}) as volatility,
    avg(excess order by date) / nullif(stddev_samp(excess order by date), 0) * sqrt({{ ppy }}) as sharpe,
    avg(excess order by date)
      / nullif(sqrt(sum(case when excess < 0 then excess * excess else 0 end order by date) / count(excess)), 0)
      * sqrt({{ ppy }}) as sortino,
    least(min(drawdown), 0) as max_drawdown,
    case when min(drawdown) < 0 then arg_min(date, [drawdown, epoch(date)]) end as max_drawdown_trough,
    max(daily_return) as best_day_return,
    arg_max(date, [daily_return, -epoch(date)]) as best_day,
    min(daily_return) as worst_day_return,
    arg_min(date, [daily_return, epoch(date)]) as worst_day
  from underwater
  group by account_id, period
),

dd_dates as (
  select
    s.account_id,
    s.period,
    (select min(u.date) from underwater as u
     where u.account_id = s.account_id and u.period = s.period and u.date <= s.max_drawdown_trough
       and u.date > coalesce((select max(z.date) from underwater as z
                              where z.account_id = s.account_id and z.period = s.period
                                and z.date < s.max_drawdown_trough and z.drawdown = 0),
                             date '0001-01-01')) as max_drawdown_start,
    (select min(u.date) from underwater as u
     where u.account_id = s.account_id and u.period = s.period
       and u.date > s.max_drawdown_trough and u.drawdown = 0) as max_drawdown_recovery
  from stats as s
  where s.max_drawdown_trough is not null
)

select
  s.account_id,
  s.period,
  s.currency,
  s.start_date,
  s.end_date,
  s.n_days,
  s.twr,
  case when 1 + s.twr >= 0 then pow(1 + s.twr, {{ ppy }} / s.n_days) - 1 end as cagr,
  s.volatility,
  s.sharpe,
  s.sortino,
  s.max_drawdown,
  d.max_drawdown_start,
  s.max_drawdown_trough,
  d.max_drawdown_recovery,
  s.best_day,
  s.best_day_return,
  s.worst_day,
  s.worst_day_return,
  cast({{ var('risk_free_rate') }} as double) as risk_free_rate
from stats as s
left join dd_dates as d using (account_id, period)
