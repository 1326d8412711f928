package postgres

// The claim statements, for the test that checks their plans.
const (
	ClaimSQL        = claimSQL
	ClaimLimitedSQL = claimLimitedSQL
)

// CompleteRunsSQL is the group-committed completion, for the test of the
// order it locks runs in.
const CompleteRunsSQL = completeRunsSQL
