package postgres

// The claim statements, for the test that checks their plans.
const (
	ClaimAnySQL      = claimAnySQL
	ClaimTypedSQL    = claimTypedSQL
	ClaimLimitedSQL  = claimLimitedSQL
	NextAvailableSQL = nextAvailableSQL
)
