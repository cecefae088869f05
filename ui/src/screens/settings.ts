// Pending writes (with conflicts side by side), the access log, and security settings.
import { api, isCommandError, type FhirResource, type PendingView, type ServerAccess } from "../api";
import { announce, refresh, showError } from "../app";
import { el } from "../dom";
import { formatDate, minutes, summary } from "../fhir";
import { authenticatorSection } from "./authenticator";

/** Writes not yet on the server, and those it refused or found in conflict. */
export async function pendingPanel(into: HTMLElement): Promise<void> {
  const writes = await api.pending();
  into.append(el("h2", {}, "Pending changes"));
  if (writes.length === 0) {
    into.append(el("p", {}, "Everything you wrote is on the server."));
    return;
  }
  const list = el("ul", { class: "items" });
  for (const write of writes) {
    const item = pendingItem(write, false);
    if (write.reason) item.append(el("span", { class: "detail" }, `Server: ${write.reason}`));
    if (write.status === "conflict" && write.server_version) {
      item.append(
        el(
          "div",
          { class: "compare" },
          el("div", {}, el("h3", {}, "Yours"), el("p", {}, writeSummary(write.resource))),
          el("div", {}, el("h3", {}, "On the server"), el("p", {}, writeSummary(write.server_version))),
        ),
      );
    }
    if (write.status !== "pending") {
      const keep = el(
        "button",
        { type: "button", class: "secondary" },
        write.status === "conflict" ? "Keep mine" : "Try again",
      );
      const drop = el("button", { type: "button", class: "secondary" }, "Discard mine");
      keep.addEventListener("click", () => void settle(write.seq, true, into));
      drop.addEventListener("click", () => void settle(write.seq, false, into));
      item.append(el("div", { class: "actions" }, keep, drop));
    }
    list.append(item);
  }
  into.append(list);
}

/** One write as a list item: its state and what it is. `elsewhere`: shown outside the
 *  Pending screen, so a write that needs a decision says where to make it. */
export function pendingItem(write: PendingView, elsewhere: boolean): HTMLLIElement {
  const state =
    write.status === "pending" ? "Waiting to send" : write.status === "conflict" ? "Changed elsewhere" : "Not accepted";
  const badge = elsewhere && write.status !== "pending" ? `${state} — see Pending` : state;
  return el(
    "li",
    { class: `pending ${write.status}` },
    el("span", { class: "badge" }, badge),
    el("span", { class: "title" }, writeSummary(write.resource)),
  );
}

/** A written resource in one line. */
function writeSummary(resource: FhirResource | null): string {
  if (!resource) return "";
  const { title, detail, date } = summary(resource);
  return [title, detail, date].filter(Boolean).join(" · ");
}

async function settle(seq: number, keepMine: boolean, into: HTMLElement): Promise<void> {
  try {
    await api.resolveWrite(seq, keepMine);
    into.replaceChildren();
    await pendingPanel(into);
    announce(keepMine ? "Queued again; it is sent at the next sync." : "Discarded; the server's version stands.");
  } catch (e) {
    showError(e);
  }
}

/** Who viewed my record: everyone, from the organisation's audit trail (online), and the
 *  views made with this device (kept even offline). */
export async function accessLogPanel(into: HTMLElement): Promise<void> {
  into.append(el("h2", {}, "Who viewed my record"));
  let trail: ServerAccess[] | null = null;
  try {
    trail = await api.serverAccessLog();
  } catch (e) {
    if (!isCommandError(e) || e.next !== "offline") showError(e);
  }
  into.append(serverTrail(trail));
  const log = await api.accessLog();
  into.append(
    el("h3", {}, "On this device"),
    el(
      "p",
      { class: "muted" },
      "Views made with this device, newest first; they reach your clinic's audit trail at the next sync.",
    ),
  );
  if (log.length === 0) {
    into.append(el("p", {}, "No views recorded yet."));
    return;
  }
  into.append(
    table(
      ["When", "Who", "What"],
      log.map((entry) => [
        formatDate(entry.at),
        entry.role ?? "",
        `${entry.action} (${entry.resource_type ?? "record"})`,
      ]),
    ),
  );
}

/** The organisation's trail as a table (`null`: it could not be fetched). */
export function serverTrail(trail: ServerAccess[] | null): HTMLElement {
  const section = el(
    "section",
    { "aria-labelledby": "trail-title" },
    el("h3", { id: "trail-title" }, "At your clinic"),
  );
  if (trail === null) {
    section.append(
      el(
        "p",
        { class: "muted" },
        "Your clinic's audit trail needs a connection to the server. Views made with this device are below.",
      ),
    );
  } else if (trail.length === 0) {
    section.append(el("p", {}, "No one has opened your record yet."));
  } else {
    section.append(
      el("p", { class: "muted" }, "Every access to your record, newest first, as your clinic's audit trail keeps it."),
      table(
        ["When", "Who", "What"],
        trail.map((a) => [
          formatDate(a.at),
          [a.who ?? "Someone", a.role ? `(${a.role})` : ""].filter(Boolean).join(" "),
          [describeAction(a.action), a.break_glass ? "EMERGENCY ACCESS" : "", a.denied ? "refused" : ""]
            .filter(Boolean)
            .join(" · "),
        ]),
      ),
    );
  }
  return section;
}

/** A logged request in words: "GET /fhir/{type}" → "viewed records". */
function describeAction(action: string): string {
  const [method] = action.split(" ");
  switch (method) {
    case "GET":
      return "viewed records";
    case "POST":
      return "added to the record";
    case "PUT":
      return "changed the record";
    case "DELETE":
      return "removed from the record";
    default:
      return action;
  }
}

function table(headings: string[], rows: string[][]): HTMLElement {
  return el(
    "table",
    { class: "results" },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, cell))))),
  );
}

/** Timeouts in force and what this platform can and cannot protect. */
export async function securityPanel(into: HTMLElement): Promise<void> {
  const security = await api.security();
  const blur = el("input", { type: "checkbox", id: "lock-on-blur", checked: security.lock_on_blur });
  blur.addEventListener("change", () => void api.setLockOnBlur(blur.checked).catch(showError));
  into.append(
    el("h2", {}, "Security"),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "Locks after"),
      el("dd", {}, `${minutes(security.idle_lock_secs)} without use`),
      el("dt", {}, "Screenshots and screen sharing"),
      el("dd", {}, security.screen_capture_blocked ? "Blocked for this window" : "Cannot be blocked on this system"),
      el("dt", {}, "Screen lock"),
      el("dd", {}, security.follows_os_lock ? "Locking your screen locks Carekeep" : "Not followed on this system yet"),
    ),
    el("div", { class: "field check" }, blur, el("label", { for: "lock-on-blur" }, "Lock when Carekeep loses focus")),
    el("h3", {}, "On this system"),
    el("ul", {}, ...security.platform_notes.map((note) => el("li", {}, note))),
    authenticatorSection(),
  );
  await devicesSection(into);
}

/** The user's devices: sign a lost one out, or sign out everywhere. */
async function devicesSection(into: HTMLElement): Promise<void> {
  const section = el(
    "section",
    { "aria-labelledby": "devices-title" },
    el("h3", { id: "devices-title" }, "Your devices"),
  );
  into.append(section);
  let devices;
  try {
    devices = await api.devices();
  } catch (e) {
    section.append(el("p", { class: "muted" }, "The device list needs a connection to the server."));
    showError(e);
    return;
  }
  const list = el("ul", { class: "items" });
  for (const device of devices) {
    const state = device.current
      ? "This device"
      : device.revoked
        ? "Signed out"
        : `Last used ${formatDate(new Date(device.last_seen * 1000).toISOString())}`;
    const item = el("li", {}, el("span", { class: "title" }, device.name), el("span", { class: "detail" }, state));
    if (!device.current && !device.revoked) {
      const revoke = el("button", { type: "button", class: "secondary" }, "Sign out this device");
      revoke.addEventListener("click", () => {
        api.revokeDevice(device.id).then(() => {
          announce(`${device.name} is signed out; it erases its copy of the records when it next connects.`);
          into.replaceChildren();
          void securityPanel(into);
        }, showError);
      });
      item.append(el("div", { class: "actions" }, revoke));
    }
    list.append(item);
  }
  const everywhere = el(
    "button",
    { type: "button", class: "danger", id: "sign-out-everywhere" },
    "Sign out everywhere",
  );
  everywhere.addEventListener("click", () => {
    api.signOutEverywhere().then(async () => {
      await refresh();
      announce("Signed out on every device.");
    }, showError);
  });
  section.append(list, everywhere);
}
