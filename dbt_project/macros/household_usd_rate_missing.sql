{#-
  Generic test (declared with severity warn): household (`ALL`) rows whose amounts are null
  because some account amount has no USD rate (no ConversionRate and no fxRateToBase row to
  derive one from). `column` counts the amounts or accounts without a rate on each ALL row;
  the failure count is the number of such rows.
-#}
{% test household_usd_rate_missing(model, column) %}
select *
from {{ model }}
where account_id = 'ALL' and {{ column }} > 0
{% endtest %}
