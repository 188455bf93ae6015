-- Drawdowns are never above the running peak.
select * from {{ ref('drawdowns') }} where drawdown > 0 or wealth > peak
