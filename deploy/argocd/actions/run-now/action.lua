-- Start one manual run: the operator starts exactly one run per distinct value
-- of the taskmaster.dev/run-now annotation, whatever the schedule or
-- spec.suspend say. The value is the request time (UTC, to the second), so a
-- double click within one second asks for one run only.
if obj.status ~= nil and obj.status.phase == "Invalid" then
  error("run-now: the task's spec is invalid; the operator starts no run until it is fixed", 0)
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["taskmaster.dev/run-now"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
return obj
