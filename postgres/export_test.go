package postgres

// The claim statements, for the test that checks their plans.
const (
	ClaimSQL        = claimSQL
	ClaimLimitedSQL = claimLimitedSQL
)

// The read statements, for the test that checks their plans.
const (
	GetRunSQL      = getRunSQL
	QueueDepthsSQL = queueDepthsSQL
	TaskQueuesSQL  = taskQueuesSQL
	ListStepsSQL   = listStepsSQL
)

// ListRunsQuery is the statement ListRuns runs for f, with its arguments.
var ListRunsQuery = listRunsQuery
