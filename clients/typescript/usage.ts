// A small consumer of the generated TypeScript types: it must type-check against the spec.
// The types are generated from the bundled spec on every run (never committed) into ./generated.
import type { components, operations, paths } from "./generated/api";

type User = components["schemas"]["User"];
type UserCreate = components["schemas"]["UserCreate"];
type UserList = components["schemas"]["UserList"];
type ErrorResponse = components["schemas"]["ErrorResponse"];
type ErrorCode = components["schemas"]["ErrorCode"];
type TokenEnvelope = components["schemas"]["TokenEnvelope"];

const newUser: UserCreate = {
  email: "grace@acme.example.com",
  password: "correct-horse-battery",
  first_name: "Grace",
  last_name: "Hopper",
  role: "admin",
};

function displayName(user: User): string {
  const tenant: string | null = user.tenant_id;
  return `${user.first_name} ${user.last_name} <${user.email}> in ${tenant ?? "the platform"}`;
}

function total(page: UserList): number {
  return page.meta.pagination.total;
}

function isRetryable(error: ErrorResponse): boolean {
  const code: ErrorCode = error.error.code;
  return code === "RATE_LIMIT_EXCEEDED" || code === "SERVICE_UNAVAILABLE";
}

function bearer(tokens: TokenEnvelope): string {
  return `${tokens.data.token_type} ${tokens.data.access_token}`;
}

type ListUsersQuery = NonNullable<operations["list_users"]["parameters"]["query"]>;
const query: ListUsersQuery = { role: "member", ordering: "-created_at", limit: 20, offset: 0 };

type GetUserOk = paths["/v1/users/{user_id}"]["get"]["responses"][200]["content"]["application/json"];
const fetched = (body: GetUserOk): User => body.data;

export { bearer, displayName, fetched, isRetryable, newUser, query, total };
