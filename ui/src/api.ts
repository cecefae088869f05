// The app's commands (src-tauri/src/commands), typed. The UI holds no key, token or
// password beyond the call that sends it: passwords go straight from the form to here.
import { Channel, invoke } from "@tauri-apps/api/core";
import type { ErrorScreen, LockNotice, NextStep, Role, SessionState, WriteStatus } from "./generated/shell";

// The shell's fixed-word messages, generated from src-tauri/src/messages.rs.
export type { ErrorScreen, LockNotice, LockReason, NextStep, Role, SessionState, WriteStatus } from "./generated/shell";

export interface SessionView {
  state: SessionState;
  role: Role | null;
  server: string;
  last_sync_unix: number | null;
  pending_writes: number | null;
  idle_lock_secs: number;
}

/** A failed command: the core's message, and what the UI should offer next. */
export interface CommandError {
  next: ErrorScreen;
  /** The core's step behind `next` (how long to wait, say); null for the shell's own checks. */
  step: NextStep | null;
  message: string;
}

export function isCommandError(e: unknown): e is CommandError {
  return typeof e === "object" && e !== null && "next" in e && "message" in e;
}

export interface SyncProgress {
  phase: string;
  done: number;
  total: number;
}

export interface SyncView {
  writes_sent: number;
  conflicts: number;
  rejected: number;
  patients: number;
  patients_over_limit: number;
  resources_pulled: number;
}

export interface TrendPoint {
  effective: string;
  value: number;
  unit: string | null;
}

/** Where an export was saved (the FHIR file and the summary page beside it). */
export interface ExportView {
  bundle: string;
  summary: string;
  documentsMissing: number;
}

export interface AccessView {
  at: string;
  role: string | null;
  action: string;
  resource_type: string | null;
  patient: string | null;
}

/** One access to the patient's records in the organisation's audit trail. */
export interface ServerAccess {
  at: string;
  who: string | null;
  role: string | null;
  action: string;
  patient: string | null;
  break_glass: boolean;
  denied: boolean;
}

export interface PendingView {
  seq: number;
  status: WriteStatus;
  resource: FhirResource;
  server_version: FhirResource | null;
  reason: string | null;
}

export interface SecurityView {
  idle_lock_secs: number;
  screen_capture_blocked: boolean;
  follows_os_lock: boolean;
  lock_on_blur: boolean;
  platform_notes: string[];
}

export interface DeviceInfo {
  id: string;
  name: string;
  created_at: number;
  last_seen: number;
  revoked: boolean;
  wipe: boolean;
  current: boolean;
}

/** A new authenticator to scan (a secret: shown once, kept nowhere). */
export interface AuthenticatorSetup {
  qr_png_base64: string;
  setup_key: string;
}

/** An opened document (from the encrypted cache, or downloaded into it first). */
export type DocumentView =
  | { kind: "text"; text: string }
  | { kind: "image"; content_type: string; data_base64: string }
  | { kind: "pdf"; data_base64: string };

export type Reading =
  { kind: "blood-pressure"; systolic: number; diastolic: number } | { kind: "glucose"; mmol_per_l: number };

/** A FHIR resource as JSON (its narrative removed by the shell). */
export type FhirResource = { resourceType: string; id?: string } & Record<string, unknown>;

// Commands that return nothing answer `null` (Rust's `()`, serialized).
export const api = {
  session: () => invoke<SessionView>("session"),
  signIn: (username: string, password: string, code: string) =>
    invoke<SessionView>("sign_in", { username, password, code }),
  unlockWithPassword: (password: string) => invoke<SessionView>("unlock_with_password", { password }),
  unlockWithPresence: () => invoke<SessionView>("unlock_with_presence"),
  lock: () => invoke<SessionView>("lock"),
  userActive: () => invoke<null>("user_active"),
  watchLock: (onLock: (notice: LockNotice) => void) => {
    const channel = new Channel<LockNotice>();
    channel.onmessage = onLock;
    return invoke<null>("watch_lock", { onLock: channel });
  },
  logout: () => invoke<{ revoked_at_server: boolean; cache_wiped: boolean }>("logout"),
  sync: (onProgress: (p: SyncProgress) => void) => {
    const channel = new Channel<SyncProgress>();
    channel.onmessage = onProgress;
    return invoke<SyncView>("sync", { onProgress: channel });
  },
  records: (resourceType: string, patient?: string, category?: string) =>
    invoke<FhirResource[]>("records", { resourceType, patient: patient ?? null, category: category ?? null }),
  labTrend: (patient: string, code: string) => invoke<TrendPoint[]>("lab_trend", { patient, code }),
  accessLog: () => invoke<AccessView[]>("access_log"),
  serverAccessLog: () => invoke<ServerAccess[]>("server_access_log"),
  exportPatient: (patient: string) => invoke<ExportView>("export_patient", { patient }),
  breakGlass: (patient: string, reason: string) => invoke<number>("break_glass", { patient, reason }),
  recordReading: (patient: string, reading: Reading) => invoke<number>("record_reading", { patient, reading }),
  requestAppointment: (patient: string, reason: string, preferredStartUnix: number) =>
    invoke<number>("request_appointment", { patient, reason, preferredStartUnix }),
  messageCareTeam: (patient: string, text: string) => invoke<number>("message_care_team", { patient, text }),
  pending: () => invoke<PendingView[]>("pending"),
  resolveWrite: (seq: number, keepMine: boolean) => invoke<null>("resolve_write", { seq, keepMine }),
  security: () => invoke<SecurityView>("security"),
  setLockOnBlur: (on: boolean) => invoke<null>("set_lock_on_blur", { on }),
  devices: () => invoke<DeviceInfo[]>("devices"),
  revokeDevice: (deviceId: string) => invoke<null>("revoke_device", { deviceId }),
  signOutEverywhere: () => invoke<null>("sign_out_everywhere"),
  beginAuthenticatorChange: () => invoke<AuthenticatorSetup>("begin_authenticator_change"),
  confirmAuthenticator: (code: string) => invoke<null>("confirm_authenticator", { code }),
  copyText: (text: string) => invoke<null>("copy_text", { text }),
  openDocument: (document: string, attachment: number) =>
    invoke<DocumentView>("open_document", { document, attachment }),
};
