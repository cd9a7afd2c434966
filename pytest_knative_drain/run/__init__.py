"""Running the matrix: one case against one pod (runner), its judgement (verdict), cases
at once (scheduler), and the fixture-contract check before any case (preflight).
Importable and testable without pytest.
"""
