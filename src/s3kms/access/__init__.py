"""Who may do what: identity policies, key policies, grants and their conditions (one evaluator).

    glob.py        `*`/`?` patterns, compiled, matched without backtracking
    conditions.py  the Condition element: operators, IfExists, set qualifiers (compiled)
    documents.py   policy documents -> compiled statements (identity and key policies), AWS's
                   default key policy
    facts.py       what a request says for conditions and grant constraints (built by handlers)
    context.py     the condition keys of one request, by name (request, key, caller, transport)
    decision.py    AWS's evaluation: key policy x identity policies x grants; the lockout check

Each module uses only those above it (and `errors`, `model`, `granttoken`).
"""
