// Plain words for what happened: timeline events as sentences that name people.
// A page is named by its developer ("Alice"), else by its target, partly masked.

import { clockText, mask } from "./dom.js";

const CHANNELS = { sms: "SMS", email: "email", webhook: "webhook" };
const VIA = {
  sms: "via the SMS link",
  email: "via the email link",
  webhook: "via the webhook's link",
  console: "in the console",
  api: "through the API",
  mqtt: "over MQTT",
};

export function channelName(channel) {
  return CHANNELS[channel] || channel || "a channel";
}

/** Who a notification went to: the developer's name, or the target, masked. */
export function recipient(notification) {
  if (!notification) return "someone";
  return notification.name || mask(notification.to, notification.channel);
}

// Why a page was not sent (the dispatcher's reasons, CONTRACT §5).
const MOOT = {
  acknowledged: "the incident was acknowledged first",
  resolved: "the incident was resolved first",
};

function how(via) {
  return via ? ` ${VIA[via] || `via ${via}`}` : "";
}

function levelOf(detail) {
  return detail.level ? ` (level ${detail.level})` : "";
}

/** What an outcome of a page means, in a word or two. */
export function outcomeWords(status) {
  return {
    pending: "waiting to be sent",
    held: "held for a bundle",
    sent: "sent",
    failed: "failed",
    cancelled: "cancelled",
    skipped: "skipped: nobody on call",
  }[status] || status;
}

/** One timeline entry ({at, type, detail}) as a sentence; ``pages`` maps notification ids
 *  to notifications (for whom a page went to). */
export function sentence(entry, pages) {
  const d = entry.detail || {};
  const page = pages.get(d.notification_id);
  const to = `${recipient(page)} by ${channelName(d.channel || (page && page.channel))}`;
  const bundle = d.bundled_with ? `, with ${d.bundled_with} more in one message` : "";
  switch (entry.type) {
    case "incident.triggered":
      return `Triggered: “${d.message}”`;
    case "incident.escalated": {
      const why = d.reason ? `: ${d.reason}` : `: nobody acknowledged level ${d.from_level} in time`;
      const round = d.round > 1 ? `, round ${d.round}` : "";
      return `Escalated to level ${d.level}${round}${why}`;
    }
    case "notification.sent":
      return `Paged ${to}${levelOf(d)}${bundle}`;
    case "notification.retrying":
      return `Could not reach ${to} yet (${d.error}); trying again`;
    case "notification.failed":
      return `Failed to page ${to}${levelOf(d)}: ${d.error}`;
    case "notification.held":
      return `Held the page to ${to}${levelOf(d)} until ${clockText(d.until)}: too many pages at once`;
    case "notification.cancelled":
      return `Did not page ${to}${levelOf(d)}: ${MOOT[d.reason] || d.reason || "no longer needed"}`;
    case "notification.skipped":
      return `Paged nobody${levelOf(d)}: ${d.reason || "nobody on call"}`;
    case "incident.acknowledged":
      return `Acknowledged by ${d.by || "someone"}${how(d.via)}`;
    case "incident.resolved":
      if (d.by === "heartbeat" && !d.via) return "Resolved: the heartbeat came back";
      return d.by
        ? `Resolved by ${d.by}${how(d.via)}`
        : "Resolved: the service is healthy again";
    case "incident.note":
      return `Note by ${d.by || "someone"}: ${d.text}`;
    default:
      return `${entry.type}${Object.keys(d).length ? ` (${JSON.stringify(d)})` : ""}`;
  }
}
