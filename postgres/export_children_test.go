package postgres

// The child statements, for the test that checks their plans.
const ChildLimitsSQL = childLimitsSQL

// RunEndWorkSQL is the look at ended runs, for the test of its plan.
const RunEndWorkSQL = runEndWorkSQL
