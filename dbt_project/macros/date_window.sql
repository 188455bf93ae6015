{#- Rows of the daily marts rebuilt by this run: var min_date <= date < var max_date. -#}
{% macro in_date_window(column='date') -%}
  {{ column }} >= cast('{{ var("min_date") }}' as date) and {{ column }} < cast('{{ var("max_date") }}' as date)
{%- endmacro %}

{#- Annual risk-free rate de-annualized per period, as quantstats does. -#}
{% macro rf_per_period() -%}
  (pow(1 + cast({{ var('risk_free_rate') }} as double), 1.0 / {{ var('periods_per_year') }}) - 1)
{%- endmacro %}
