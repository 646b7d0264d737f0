"""The REST paths the tests call."""

RUN = "/tools/run_agent_task"
GET = "/resources/get_agent_result/{}"
LIST = "/resources/agent_results"
AUDIT = "/audit/events"
