// lienthong-reflect: a minimal grpcurl work-alike that knows no .proto files.
//
// Everything is resolved through the server's reflection service
// (grpc.reflection.v1alpha.ServerReflection): the FileDescriptorProtos it
// returns (with their dependencies, fetched recursively) go into a private
// DescriptorPool; requests are parsed from JSON into DynamicMessages,
// serialized into raw ByteBuffers and sent through grpc::GenericStub; the
// answers are printed as JSON. It exists so that the README's grpcurl
// examples can be run by the tests on a machine without grpcurl.
//
//   lienthong-reflect [flags] HOST:PORT list [SERVICE]
//   lienthong-reflect [flags] HOST:PORT describe [SYMBOL]
//   lienthong-reflect [flags] HOST:PORT SERVICE/METHOD   (or SERVICE.METHOD)
//
// Flags (grpcurl's spelling; -flag value, -flag=value or --flag):
//   -cacert F -cert F -key F   TLS: CA bundle, client certificate and key
//   -plaintext                 no TLS
//   -authority S / -servername S   name to verify the server certificate for
//   -d JSON                    request(s); "@" reads them from stdin;
//                              absent means one empty request
//   -H "name: value"           request metadata (repeatable)
//   -max-time S                bound on the whole operation (seconds)
//   -connect-timeout S         bound on the reflection calls (default 10)
//   -emit-defaults             print fields that hold their default value
//
// Exit codes, as grpcurl's: 0 OK; 64 + the gRPC code when the call failed
// ("ERROR:\n  Code: ...\n  Message: ..." on stderr); 2 usage; 1 anything
// else (unknown symbol, bad JSON, reflection failure).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "reflection.grpc.pb.h"

namespace {

namespace pb = ::google::protobuf;
namespace refl = ::grpc::reflection::v1alpha;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kStatusCodeOffset = 64;

using Clock = std::chrono::system_clock;

// ---- command line -----------------------------------------------------------

struct Flags {
  std::string cacert, cert, key;
  bool plaintext = false;
  std::string authority;
  std::optional<std::string> data;
  std::vector<std::string> headers;
  double max_time = 0;
  double connect_timeout = 10;
  bool emit_defaults = false;
  std::vector<std::string> args;  // HOST:PORT, verb, symbol
};

// Leaves at once: no destructors of live gRPC objects run.
[[noreturn]] void Exit(int code) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(code);
}

[[noreturn]] void Usage(const std::string& problem) {
  if (!problem.empty()) std::cerr << "lienthong-reflect: " << problem << "\n";
  std::cerr
      << "usage: lienthong-reflect [-cacert F -cert F -key F | -plaintext]\n"
         "         [-authority NAME] [-d JSON|@] [-H 'name: value']...\n"
         "         [-max-time S] [-connect-timeout S] [-emit-defaults]\n"
         "         HOST:PORT list [SERVICE] | describe [SYMBOL] | "
         "SERVICE/METHOD\n";
  Exit(kExitUsage);
}

double ParseSeconds(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  double v = std::strtod(value.c_str(), &end);
  if (value.empty() || end == nullptr || *end != '\0' || v < 0) {
    Usage("-" + flag + ": not a number of seconds: \"" + value + "\"");
  }
  return v;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  const std::set<std::string> bool_flags = {"plaintext", "emit-defaults"};
  const std::set<std::string> value_flags = {
      "cacert", "cert", "key",      "authority",      "servername",
      "d",      "H",    "max-time", "connect-timeout"};
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;  // Go flags stop at a non-flag
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "h" || name == "help") Usage("");
    if (bool_flags.count(name)) {
      bool on = !value || *value == "true" || *value == "1";
      if (name == "plaintext") f.plaintext = on;
      if (name == "emit-defaults") f.emit_defaults = on;
      continue;
    }
    if (!value_flags.count(name)) Usage("unknown flag -" + name);
    if (!value) {
      if (i + 1 >= argc) Usage("-" + name + " needs a value");
      value = argv[++i];
    }
    if (name == "cacert")
      f.cacert = *value;
    else if (name == "cert")
      f.cert = *value;
    else if (name == "key")
      f.key = *value;
    else if (name == "authority" || name == "servername")
      f.authority = *value;
    else if (name == "d")
      f.data = *value;
    else if (name == "H")
      f.headers.push_back(*value);
    else if (name == "max-time")
      f.max_time = ParseSeconds(name, *value);
    else if (name == "connect-timeout")
      f.connect_timeout = ParseSeconds(name, *value);
  }
  for (; i < argc; ++i) f.args.push_back(argv[i]);
  if (f.args.empty()) Usage("HOST:PORT missing");
  if (f.args.size() < 2) Usage("a verb (list, describe or a method) missing");
  if (f.cert.empty() != f.key.empty()) Usage("-cert and -key go together");
  if (f.plaintext && (!f.cacert.empty() || !f.cert.empty())) {
    Usage("-plaintext excludes -cacert, -cert and -key");
  }
  return f;
}

std::optional<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---- status reporting -------------------------------------------------------

// The names grpcurl prints (Go's codes.Code.String()).
const char* GoCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "Canceled";
    case grpc::StatusCode::UNKNOWN:
      return "Unknown";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "InvalidArgument";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DeadlineExceeded";
    case grpc::StatusCode::NOT_FOUND:
      return "NotFound";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "AlreadyExists";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PermissionDenied";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "ResourceExhausted";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FailedPrecondition";
    case grpc::StatusCode::ABORTED:
      return "Aborted";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OutOfRange";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "Unimplemented";
    case grpc::StatusCode::INTERNAL:
      return "Internal";
    case grpc::StatusCode::UNAVAILABLE:
      return "Unavailable";
    case grpc::StatusCode::DATA_LOSS:
      return "DataLoss";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "Unauthenticated";
    default:
      return "Code";
  }
}

[[noreturn]] void FailStatus(const grpc::Status& s) {
  std::cerr << "ERROR:\n  Code: " << GoCodeName(s.error_code())
            << "\n  Message: " << s.error_message() << "\n";
  Exit(kStatusCodeOffset + static_cast<int>(s.error_code()));
}

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << message << "\n";
  Exit(kExitError);
}

// ---- reflection
// ---------------------------------------------------------------

// One reflection stream, asked one question at a time. What it learns goes
// into a database from which `pool` builds descriptors on demand.
class Reflector {
 public:
  Reflector(const std::shared_ptr<grpc::Channel>& channel,
            Clock::time_point deadline, const Flags& flags)
      : stub_(refl::ServerReflection::NewStub(channel)), pool_(&db_) {
    context_.set_deadline(deadline);
    AddHeaders(flags, &context_);
    stream_ = stub_->ServerReflectionInfo(&context_);
  }

  ~Reflector() {
    if (stream_ != nullptr) {
      stream_->WritesDone();
      stream_->Finish();
    }
  }

  static void AddHeaders(const Flags& flags, grpc::ClientContext* context) {
    for (const std::string& h : flags.headers) {
      size_t colon = h.find(':');
      if (colon == std::string::npos) Usage("-H \"" + h + "\": name: value");
      std::string name = h.substr(0, colon);
      std::string value = h.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      context->AddMetadata(name, value);
    }
  }

  std::vector<std::string> ListServices() {
    refl::ServerReflectionRequest request;
    request.set_list_services("*");
    refl::ServerReflectionResponse response = Ask(request);
    if (!response.has_list_services_response()) {
      Fail("Failed to list services: unexpected reflection answer");
    }
    std::vector<std::string> names;
    for (const auto& s : response.list_services_response().service()) {
      names.push_back(s.name());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  // Loads the file that defines `symbol` and everything it depends on.
  // False when the server does not know the symbol.
  bool LoadSymbol(const std::string& symbol) {
    if (loaded_symbols_.count(symbol)) return true;
    refl::ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    refl::ServerReflectionResponse response = Ask(request);
    if (response.has_error_response()) {
      if (response.error_response().error_code() ==
          static_cast<int>(grpc::StatusCode::NOT_FOUND)) {
        return false;
      }
      Fail("Failed to resolve symbol \"" + symbol +
           "\": " + response.error_response().error_message());
    }
    AddFiles(response);
    loaded_symbols_.insert(symbol);
    return true;
  }

  const pb::DescriptorPool& pool() const { return pool_; }

 private:
  refl::ServerReflectionResponse Ask(const refl::ServerReflectionRequest& r) {
    refl::ServerReflectionResponse response;
    if (!stream_->Write(r) || !stream_->Read(&response)) {
      grpc::Status s = stream_->Finish();
      stream_.reset();
      if (s.ok()) {
        s = grpc::Status(grpc::StatusCode::UNKNOWN,
                         "reflection stream ended early");
      }
      std::cerr << "Failed to talk to the reflection service:\n";
      FailStatus(s);
    }
    return response;
  }

  void AddFiles(const refl::ServerReflectionResponse& response) {
    if (!response.has_file_descriptor_response()) {
      Fail("unexpected reflection answer: " + response.ShortDebugString());
    }
    std::vector<std::string> missing;
    for (const std::string& bytes :
         response.file_descriptor_response().file_descriptor_proto()) {
      pb::FileDescriptorProto file;
      if (!file.ParseFromString(bytes)) {
        Fail("reflection sent a file descriptor that does not parse");
      }
      if (!known_files_.insert(file.name()).second) continue;
      for (const std::string& dep : file.dependency()) missing.push_back(dep);
      if (!db_.Add(file)) Fail("cannot add " + file.name() + " to the pool");
    }
    for (const std::string& dep : missing) {
      if (known_files_.count(dep)) continue;
      refl::ServerReflectionRequest request;
      request.set_file_by_filename(dep);
      refl::ServerReflectionResponse answer = Ask(request);
      if (answer.has_error_response()) {
        Fail("Failed to fetch " + dep + ": " +
             answer.error_response().error_message());
      }
      AddFiles(answer);  // recursive: its own dependencies
    }
  }

  std::unique_ptr<refl::ServerReflection::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<refl::ServerReflectionRequest,
                                           refl::ServerReflectionResponse>>
      stream_;
  pb::SimpleDescriptorDatabase db_;
  pb::DescriptorPool pool_;
  std::set<std::string> known_files_;
  std::set<std::string> loaded_symbols_;
};

// ---- commands
// -----------------------------------------------------------------

int List(Reflector& reflector, const Flags& flags) {
  if (flags.args.size() > 3) Usage("list takes at most one service");
  if (flags.args.size() == 2) {
    for (const std::string& s : reflector.ListServices())
      std::cout << s << "\n";
    return 0;
  }
  const std::string& name = flags.args[2];
  if (!reflector.LoadSymbol(name)) {
    Fail("Failed to list methods for service \"" + name +
         "\": Symbol not found: " + name);
  }
  const pb::ServiceDescriptor* service =
      reflector.pool().FindServiceByName(name);
  if (service == nullptr) Fail("\"" + name + "\" is not a service");
  for (int i = 0; i < service->method_count(); ++i) {
    std::cout << service->method(i)->full_name() << "\n";
  }
  return 0;
}

void DescribeOne(Reflector& reflector, const std::string& symbol) {
  std::string name = symbol;
  if (!name.empty() && name[0] == '.') name.erase(0, 1);
  if (!reflector.LoadSymbol(name)) {
    Fail("Failed to resolve symbol \"" + name +
         "\": Symbol not found: " + name);
  }
  const pb::DescriptorPool& pool = reflector.pool();
  if (const auto* d = pool.FindServiceByName(name)) {
    std::cout << name << " is a service:\n" << d->DebugString();
  } else if (const auto* d = pool.FindMessageTypeByName(name)) {
    std::cout << name << " is a message:\n" << d->DebugString();
  } else if (const auto* d = pool.FindEnumTypeByName(name)) {
    std::cout << name << " is an enum:\n" << d->DebugString();
  } else if (const auto* d = pool.FindMethodByName(name)) {
    std::cout << name << " is a method:\n" << d->DebugString();
  } else if (const auto* d = pool.FindFieldByName(name)) {
    std::cout << name << " is a field:\n" << d->DebugString();
  } else if (const auto* d = pool.FindEnumValueByName(name)) {
    std::cout << name << " is an enum value:\n"
              << d->name() << " = " << d->number() << ";\n";
  } else if (const auto* d = pool.FindOneofByName(name)) {
    std::cout << name << " is a one-of:\n" << d->DebugString();
  } else if (const auto* d = pool.FindFileByName(name)) {
    std::cout << name << " is a file:\n" << d->DebugString();
  } else {
    Fail("Failed to resolve symbol \"" + name + "\"");
  }
}

int Describe(Reflector& reflector, const Flags& flags) {
  if (flags.args.size() == 2) {
    for (const std::string& s : reflector.ListServices()) {
      DescribeOne(reflector, s);
    }
    return 0;
  }
  for (size_t i = 2; i < flags.args.size(); ++i) {
    DescribeOne(reflector, flags.args[i]);
  }
  return 0;
}

// Splits a stream of JSON values ({...}{...} or separated by whitespace).
std::vector<std::string> SplitJsonValues(const std::string& text) {
  std::vector<std::string> values;
  size_t i = 0;
  while (true) {
    while (i < text.size() && isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= text.size()) break;
    size_t start = i;
    int depth = 0;
    bool in_string = false;
    for (; i < text.size(); ++i) {
      char c = text[i];
      if (in_string) {
        if (c == '\\')
          ++i;
        else if (c == '"')
          in_string = false;
        continue;
      }
      if (c == '"')
        in_string = true;
      else if (c == '{' || c == '[')
        ++depth;
      else if (c == '}' || c == ']') {
        if (--depth == 0) {
          ++i;
          break;
        }
      } else if (depth == 0 && isspace(static_cast<unsigned char>(c))) {
        break;
      }
    }
    values.push_back(text.substr(start, i - start));
  }
  return values;
}

std::string ToJson(const pb::Message& message, const Flags& flags) {
  pb::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = flags.emit_defaults;
  std::string out;
  auto s = pb::util::MessageToJsonString(message, &out, options);
  if (!s.ok()) Fail("cannot print the answer as JSON: " + s.ToString());
  if (out.empty() || out.back() != '\n') out += '\n';
  return out;
}

int Invoke(Reflector& reflector, const std::shared_ptr<grpc::Channel>& channel,
           const Flags& flags, std::optional<Clock::time_point> deadline) {
  if (flags.args.size() > 2) Usage("too many arguments after the method");
  // SERVICE/METHOD or SERVICE.METHOD
  std::string spec = flags.args[1];
  size_t cut = spec.rfind('/');
  if (cut == std::string::npos) cut = spec.rfind('.');
  if (cut == std::string::npos || cut == 0 || cut + 1 == spec.size()) {
    Usage("\"" + spec + "\": expected SERVICE/METHOD, list or describe");
  }
  const std::string service_name = spec.substr(0, cut);
  const std::string method_name = spec.substr(cut + 1);
  if (!reflector.LoadSymbol(service_name)) {
    Fail("Error invoking method \"" + spec +
         "\": target server does not expose service \"" + service_name + "\"");
  }
  const pb::ServiceDescriptor* service =
      reflector.pool().FindServiceByName(service_name);
  if (service == nullptr) Fail("\"" + service_name + "\" is not a service");
  const pb::MethodDescriptor* method = service->FindMethodByName(method_name);
  if (method == nullptr) {
    Fail("Error invoking method \"" + spec + "\": service \"" + service_name +
         "\" does not include a method named \"" + method_name + "\"");
  }

  // The requests.
  std::string data = flags.data.value_or("");
  if (data == "@") {
    data.assign(std::istreambuf_iterator<char>(std::cin), {});
  }
  std::vector<std::string> texts = SplitJsonValues(data);
  if (!flags.data || (texts.empty() && !method->client_streaming())) {
    texts = {"{}"};
  }
  if (!method->client_streaming() && texts.size() != 1) {
    Fail("Error invoking method \"" + spec +
         "\": method is unary or server "
         "streaming; it takes exactly one request message, not " +
         std::to_string(texts.size()));
  }
  pb::DynamicMessageFactory factory(&reflector.pool());
  const pb::Message* request_prototype =
      factory.GetPrototype(method->input_type());
  const pb::Message* response_prototype =
      factory.GetPrototype(method->output_type());
  std::vector<grpc::ByteBuffer> requests;
  for (const std::string& text : texts) {
    std::unique_ptr<pb::Message> request(request_prototype->New());
    auto s = pb::util::JsonStringToMessage(text, request.get());
    if (!s.ok()) {
      Fail("Error invoking method \"" + spec +
           "\": error getting request "
           "data: " +
           s.ToString());
    }
    std::string bytes;
    request->SerializeToString(&bytes);
    grpc::Slice slice(bytes);
    requests.emplace_back(&slice, 1);
  }

  // The call: one generic streaming call serves every method kind; a unary
  // method sees one message and a half-close, as from a unary stub.
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  if (deadline) context.set_deadline(*deadline);
  Reflector::AddHeaders(flags, &context);
  grpc::CompletionQueue cq;
  const std::string path = "/" + service->full_name() + "/" + method->name();
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, path, &cq);
  auto wait = [&cq]() {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) Fail("completion queue shut down");
    return ok;
  };
  int tag = 0;
  call->StartCall(&tag);
  bool alive = wait();
  for (size_t i = 0; alive && i < requests.size(); ++i) {
    call->Write(requests[i], &tag);
    alive = wait();
  }
  if (alive) {
    call->WritesDone(&tag);
    alive = wait();
  }
  int count = 0;
  while (alive) {
    grpc::ByteBuffer buffer;
    call->Read(&buffer, &tag);
    if (!wait()) break;
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (buffer.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) {
        bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    std::unique_ptr<pb::Message> response(response_prototype->New());
    if (!response->ParseFromString(bytes)) {
      Fail("the answer does not parse as " +
           method->output_type()->full_name());
    }
    if (count++ > 0) std::cout << "\n";
    std::cout << ToJson(*response, flags) << std::flush;
  }
  grpc::Status status;
  call->Finish(&status, &tag);
  wait();
  cq.Shutdown();
  void* ignored_tag;
  bool ignored_ok;
  while (cq.Next(&ignored_tag, &ignored_ok)) {
  }
  if (!status.ok()) FailStatus(status);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (flags.plaintext) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    auto read = [](const std::string& flag, const std::string& path) {
      std::optional<std::string> text = ReadAll(path);
      if (!text) Fail("-" + flag + " " + path + ": cannot read");
      return *text;
    };
    if (!flags.cacert.empty())
      ssl.pem_root_certs = read("cacert", flags.cacert);
    if (!flags.cert.empty()) {
      ssl.pem_cert_chain = read("cert", flags.cert);
      ssl.pem_private_key = read("key", flags.key);
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  if (!flags.authority.empty()) args.SetSslTargetNameOverride(flags.authority);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(flags.args[0], credentials, args);

  const Clock::time_point start = Clock::now();
  auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(s));
  };
  std::optional<Clock::time_point> deadline;
  if (flags.max_time > 0) deadline = start + seconds(flags.max_time);
  Clock::time_point reflection_deadline =
      start + seconds(flags.connect_timeout > 0 ? flags.connect_timeout : 10);
  if (deadline) reflection_deadline = std::min(reflection_deadline, *deadline);

  Reflector reflector(channel, reflection_deadline, flags);
  const std::string& verb = flags.args[1];
  if (verb == "list") return List(reflector, flags);
  if (verb == "describe") return Describe(reflector, flags);
  return Invoke(reflector, channel, flags, deadline);
}
