"""Operation counting, energy pricing, reports and the CI gate (installed as adderconv.analysis)."""
