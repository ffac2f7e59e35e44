package io.github.pydanticaistream.client;

import com.google.protobuf.ListValue;
import com.google.protobuf.NullValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import io.github.pydanticaistream.v1.Approval;
import io.github.pydanticaistream.v1.DeferredCall;
import io.github.pydanticaistream.v1.DeferredCallKind;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventKind;
import io.github.pydanticaistream.v1.ExternalResult;
import io.github.pydanticaistream.v1.ToolAnswer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Answers to the deferred tool calls of a run that waits for input, for {@link
 * StreamClient#respond}; and {@link #inputCalls}, the calls an {@code input_required} event waits
 * on. JSON values are plain Java: null, Boolean, Number, String, List and Map with String keys.
 */
public final class ToolAnswers {
  private ToolAnswers() {}

  /** A call an {@code input_required} event waits on, with its arguments as plain Java values. */
  public static final class InputCall {
    private final DeferredCall call;

    InputCall(DeferredCall call) {
      this.call = call;
    }

    public String toolCallId() {
      return call.getToolCallId();
    }

    public String toolName() {
      return call.getToolName();
    }

    /** The arguments as the model sent them. */
    public Map<String, Object> args() {
      return toJava(call.getArgs());
    }

    /** APPROVAL: answer with approve or deny; EXTERNAL, QUESTION: with externalResult or retry. */
    public DeferredCallKind kind() {
      return call.getKind();
    }

    @Override
    public String toString() {
      return kind() + " " + toolCallId() + " " + toolName() + args();
    }
  }

  /** The calls an {@code EVENT_KIND_INPUT_REQUIRED} event waits on (none for another event). */
  public static List<InputCall> inputCalls(Event event) {
    List<InputCall> calls = new ArrayList<>();
    if (event.getKind() == EventKind.EVENT_KIND_INPUT_REQUIRED) {
      event.getCallsList().forEach(call -> calls.add(new InputCall(call)));
    }
    return calls;
  }

  /** An approval: the tool runs with the model's arguments. */
  public static ToolAnswer approve(String toolCallId) {
    return approval(toolCallId, Approval.newBuilder().setApproved(true));
  }

  /** An approval with arguments the tool runs with instead of the model's. */
  public static ToolAnswer approve(String toolCallId, Map<String, ?> overrideArgs) {
    Struct args = toValue(overrideArgs).getStructValue();
    return approval(toolCallId, Approval.newBuilder().setApproved(true).setOverrideArgs(args));
  }

  /** A denial: the tool does not run; the model is told {@code message}. */
  public static ToolAnswer deny(String toolCallId, String message) {
    return approval(toolCallId, Approval.newBuilder().setApproved(false).setDenialMessage(message));
  }

  /** The result of an external call (or the answer to a question): {@code value}, a JSON value. */
  public static ToolAnswer externalResult(String toolCallId, Object value) {
    return result(toolCallId, ExternalResult.newBuilder().setValue(toValue(value)));
  }

  /** An external call that failed: the model sees {@code message} as a retry prompt for it. */
  public static ToolAnswer retry(String toolCallId, String message) {
    return result(toolCallId, ExternalResult.newBuilder().setRetry(message));
  }

  private static ToolAnswer approval(String toolCallId, Approval.Builder approval) {
    return ToolAnswer.newBuilder().setToolCallId(toolCallId).setApproval(approval).build();
  }

  private static ToolAnswer result(String toolCallId, ExternalResult.Builder result) {
    return ToolAnswer.newBuilder().setToolCallId(toolCallId).setResult(result).build();
  }

  /**
   * A plain Java JSON value as a protobuf {@code Value}.
   *
   * @throws IllegalArgumentException for anything else (a map key that is not a String too)
   */
  static Value toValue(Object value) {
    Value.Builder out = Value.newBuilder();
    if (value == null) {
      out.setNullValue(NullValue.NULL_VALUE);
    } else if (value instanceof Boolean) {
      out.setBoolValue((Boolean) value);
    } else if (value instanceof Number) {
      out.setNumberValue(((Number) value).doubleValue());
    } else if (value instanceof String) {
      out.setStringValue((String) value);
    } else if (value instanceof List) {
      ListValue.Builder list = ListValue.newBuilder();
      ((List<?>) value).forEach(item -> list.addValues(toValue(item)));
      out.setListValue(list);
    } else if (value instanceof Map) {
      Struct.Builder struct = Struct.newBuilder();
      for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
        if (!(entry.getKey() instanceof String)) {
          throw new IllegalArgumentException("not a JSON object key: " + entry.getKey());
        }
        struct.putFields((String) entry.getKey(), toValue(entry.getValue()));
      }
      out.setStructValue(struct);
    } else {
      throw new IllegalArgumentException("not a JSON value: " + value.getClass().getName());
    }
    return out.build();
  }

  /** A protobuf {@code Struct} as a Map of plain Java values (numbers as Double). */
  static Map<String, Object> toJava(Struct struct) {
    Map<String, Object> out = new LinkedHashMap<>();
    struct.getFieldsMap().forEach((key, value) -> out.put(key, toJava(value)));
    return out;
  }

  private static Object toJava(Value value) {
    switch (value.getKindCase()) {
      case BOOL_VALUE:
        return value.getBoolValue();
      case NUMBER_VALUE:
        return value.getNumberValue();
      case STRING_VALUE:
        return value.getStringValue();
      case LIST_VALUE:
        List<Object> list = new ArrayList<>();
        value.getListValue().getValuesList().forEach(item -> list.add(toJava(item)));
        return list;
      case STRUCT_VALUE:
        return toJava(value.getStructValue());
      default:
        return null;
    }
  }
}
