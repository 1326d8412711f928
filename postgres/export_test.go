package postgres

// The claim statements, for the test that checks their plans.
const (
	ClaimAnySQL      = claimAnySQL
	ClaimTypedSQL    = claimTypedSQL
	ClaimLimitedSQL  = claimLimitedSQL
	NextAvailableSQL = nextAvailableSQL
)

// CompleteRunsSQL is the group-committed completion, for the test of the
// order it locks runs in.
const CompleteRunsSQL = completeRunsSQL

// The read statements, for the test that checks their plans.
const (
	GetRunSQL      = getRunSQL
	QueueDepthsSQL = queueDepthsSQL
	TaskQueuesSQL  = taskQueuesSQL
	ListStepsSQL   = listStepsSQL
)

// ListRunsQuery is the statement ListRuns runs for f, with its arguments.
var ListRunsQuery = listRunsQuery
