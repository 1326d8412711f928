package postgres

// The child statements, for the test that checks their plans.
const ChildLimitsSQL = childLimitsSQL
