package postgres

// The claim statements, for the test that checks their plans.
const (
	ClaimSQL        = claimSQL
	ClaimLimitedSQL = claimLimitedSQL
)
