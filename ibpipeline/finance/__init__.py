"""Pure performance math: time-weighted and money-weighted returns, risk statistics."""
