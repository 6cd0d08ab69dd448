-- Argo CD resource actions for taskmaster.dev/ScheduledTask: run-now always
-- (disabled while the spec is Invalid or the task is being deleted), suspend
-- unless suspended, and resume when suspended or stopped after failures.
local actions = {}

local invalid = obj.status ~= nil and obj.status.phase == "Invalid"
local deleting = obj.metadata.deletionTimestamp ~= nil
actions["run-now"] = {
  ["displayName"] = "Run now",
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["disabled"] = invalid or deleting,
}

-- Stopped after failures: the Ready condition says so (the phase says Running
-- while a manual run is active).
-- (Argo CD runs each script alone, with no module to share: the same few lines
-- are in discovery.lua and resume/action.lua.)
local function stopped_after_failures(status)
  if status == nil or status.conditions == nil then
    return false
  end
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" and c.reason == "StoppedAfterFailures" then
      return true
    end
  end
  return false
end

local stopped = stopped_after_failures(obj.status)
if obj.spec.suspend == true or stopped then
  actions["resume"] = {["iconClass"] = "fa fa-fw fa-play"}
end
if obj.spec.suspend ~= true then
  actions["suspend"] = {["iconClass"] = "fa fa-fw fa-pause"}
end

return actions
