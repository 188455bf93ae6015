{#-
  Money stays DECIMAL end to end, so every mart is bit-identical across identical runs (a sum of
  DOUBLEs depends on the order in which threads combine rows).

  to_usd(amount, rate): amount (decimal, any currency) x rate (decimal(38, 14), e.g. usd_per_base),
  rounded to decimal(38, 10) row by row: the product is exact (scale 24, amounts up to 1e14),
  its rounding to 10 places deterministic, so sums of the results are exact and order-free.
-#}
{% macro to_usd(amount, rate) -%}
  cast(cast({{ amount }} as decimal(38, 10)) * cast({{ rate }} as decimal(38, 14)) as decimal(38, 10))
{%- endmacro %}

{#- A reciprocal rate (1 / rate) as decimal(38, 14), rounded deterministically. -#}
{% macro reciprocal_rate(rate) -%}
  cast(cast(1 as double) / cast({{ rate }} as double) as decimal(38, 14))
{%- endmacro %}

{#-
  strict_sum(x): sum(x), but null as soon as one x of the group is null (sum() would skip it and
  report a partial total, e.g. 0 for a household whose rates are all missing).
-#}
{% macro strict_sum(x) -%}
  case when count(*) = count({{ x }}) then sum({{ x }}) end
{%- endmacro %}
