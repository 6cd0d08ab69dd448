-- Argo CD health check for taskmaster.dev/ScheduledTask.
--
-- Reads the status the TaskMaster operator writes (see the status table of the
-- product contract and docs/argocd.md for the rules and why):
--   observedGeneration, phase (Scheduled, Running, Suspended, Completed, Failed,
--   Stopped, Invalid), nextRunTime, history (newest first) and the Ready, Suspended,
--   Running and Degraded conditions.
--
-- Argo CD runs custom checks with only the base, table and a reduced os library
-- (no string, no math): this script uses nothing else.

-- A recurring task is Degraded once this many runs in a row have failed (or
-- fewer, when spec.historyLimit keeps fewer entries). A single failure shows in
-- the message only: one flaky night should not turn the whole Application red.
local FAILED_RUNS_BEFORE_DEGRADED = 3
local DEFAULT_HISTORY_LIMIT = 10

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

-- Runs (distinct scheduled times: the attempts of one run count once) that
-- failed, timed out or were missed since the last success, newest first.
-- Skipped and Replaced entries neither break nor extend the streak.
local function failed_runs_in_a_row(status)
  local count = 0
  local seen = {}
  if status.history == nil then
    return 0
  end
  for _, entry in ipairs(status.history) do
    local result = entry.result
    if result == "Succeeded" then
      return count
    end
    if result == "Failed" or result == "TimedOut" or result == "Missed" then
      local key = entry.scheduledTime or ("#" .. count)
      if not seen[key] then
        seen[key] = true
        count = count + 1
      end
    end
  end
  return count
end

local function runs_needed_for_degraded(spec)
  local limit = DEFAULT_HISTORY_LIMIT
  if spec ~= nil and spec.historyLimit ~= nil then
    limit = spec.historyLimit
  end
  if limit < FAILED_RUNS_BEFORE_DEGRADED then
    return limit
  end
  return FAILED_RUNS_BEFORE_DEGRADED
end

local hs = {}
local status = obj.status
local spec = obj.spec or {}

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the task"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
    .. " (status is for generation " .. status.observedGeneration .. ")"
  return hs
end

local phase = status.phase
local degraded = condition(status, "Degraded")
local last_failure = nil
if degraded ~= nil and degraded.status == "True" then
  last_failure = message_of(degraded, "the last run failed")
end

if phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = message_of(condition(status, "Ready"), "The spec is invalid")
  return hs
end

-- Stopped by spec.stopAfterConsecutiveFailures: it runs nothing until someone acts.
if phase == "Stopped" then
  hs.status = "Degraded"
  hs.message = message_of(condition(status, "Ready"), "Stopped after consecutive failed runs")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed: " .. (last_failure or "the run failed")
  return hs
end

-- Healthy, not Suspended: Argo CD rates an Application by its worst child, and
-- a Suspended child would show the whole Application as Suspended.
if spec.suspend == true then
  hs.status = "Healthy"
  hs.message = "Suspended: spec.suspend is true, no new runs start"
  return hs
end

local needed = runs_needed_for_degraded(spec)
local in_a_row = failed_runs_in_a_row(status)
if needed == 0 and last_failure ~= nil then
  -- historyLimit 0 keeps no history to count: the last run decides.
  in_a_row = 1
  needed = 1
end
if last_failure ~= nil and in_a_row >= needed then
  hs.status = "Degraded"
  if in_a_row == 1 then
    hs.message = "The last run failed: " .. last_failure
  else
    hs.message = "The last " .. in_a_row .. " runs failed: " .. last_failure
  end
  return hs
end

local suffix = ""
if last_failure ~= nil then
  suffix = "; the last run failed: " .. last_failure
end

if phase == "Running" then
  hs.status = "Healthy"
  hs.message = "Running: " .. message_of(condition(status, "Running"), "a Job is active") .. suffix
  return hs
end

if phase == "Scheduled" then
  hs.status = "Healthy"
  if status.nextRunTime ~= nil then
    hs.message = "Next run at " .. status.nextRunTime .. suffix
  else
    hs.message = "Scheduled" .. suffix
  end
  return hs
end

if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = "Completed: no runs left" .. suffix
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase: " .. tostring(phase)
return hs
